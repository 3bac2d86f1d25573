#!/usr/bin/env python3
"""cli_bench_smoke: `clbn bench` on one small shape writes a JSON record with the required
fields for every op and layout, a 4-MiB shape runs with the cache flushed, and bad --shape
values exit 2. Never judges the times.
Usage: bench_smoke.py CLBN_BINARY WORK_DIR"""
import json
import math
import os
import subprocess
import sys

clbn, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
out = os.path.join(work, "bench.json")
failures = []

r = subprocess.run([clbn, "bench", "--shape", "2,16,8,8", "--runs", "3", "--warmup", "1",
                    "--json", out], capture_output=True, text=True)
if r.returncode != 0:
    failures.append(f"bench exited {r.returncode}: {r.stderr.strip()}")
else:
    doc = json.load(open(out))
    records = doc["records"] if isinstance(doc, dict) else doc
    required = ["shape", "layout", "op", "dtype", "median_s", "ideal_bytes", "min_bytes", "gbps",
                "roofline_gbps", "roofline_fraction", "ideal_fraction", "baseline_speedup",
                "plan", "device"]
    plan_fields = ["strategy", "work_group_size", "split", "vector_width", "channels_per_item",
                   "kernels"]
    seen = set()
    for rec in records:
        if rec.get("op") == "copy":
            continue
        where = f"{rec.get('layout')} {rec.get('op')}"
        seen.add((rec.get("layout"), rec.get("op")))
        for k in required:
            if k not in rec:
                failures.append(f"{where}: no field {k}")
        for k in plan_fields:
            if k not in rec.get("plan", {}):
                failures.append(f"{where}: plan has no {k}")
        if rec.get("shape") != [2, 16, 8, 8] or rec.get("dtype") != "f32":
            failures.append(f"{where}: shape {rec.get('shape')} dtype {rec.get('dtype')}")
        m = rec.get("median_s")
        if not isinstance(m, (int, float)) or not math.isfinite(m) or m <= 0:
            failures.append(f"{where}: median_s {m!r} is not positive and finite")
    for layout in ("nchw", "nhwc"):
        for op in ("forward_train", "forward_infer", "backward"):
            if (layout, op) not in seen:
                failures.append(f"no record for {layout} {op}")
    if not any(rec.get("op") == "copy" for rec in records):
        failures.append("no roofline (copy) records")

# A shape of 4 MiB a tensor runs cold (the default --cache cold): the flush is set up on the
# device and named in the JSON, and every record of it says cold.
cold_out = os.path.join(work, "bench_cold.json")
r = subprocess.run([clbn, "bench", "--shape", "1,16,256,256", "--layout", "nchw", "--runs", "1",
                    "--warmup", "0", "--rounds", "1", "--no-baseline", "--json", cold_out],
                   capture_output=True, text=True)
if r.returncode != 0:
    failures.append(f"cold bench exited {r.returncode}: {r.stderr.strip()}")
else:
    doc = json.load(open(cold_out))
    if doc.get("cache") != "cold" or not doc.get("flush_bytes", 0) >= 64 << 20:
        failures.append(f"cold bench: cache {doc.get('cache')!r}, flush_bytes "
                        f"{doc.get('flush_bytes')!r} (want cold and at least 64 MiB)")
    for rec in doc["records"]:
        if rec.get("cache") != "cold":
            failures.append(f"cold bench: {rec.get('layout')} {rec.get('op')} {rec.get('kind', '')}"
                            f" ran {rec.get('cache')!r}")

for bad in ["2,0,8,8", "2,16,8", "a,b", "2,16,8,8,1", "-2,16", "2,,3,4", "", "2,16,"]:
    r = subprocess.run([clbn, "bench", "--shape", bad, "--runs", "1"], capture_output=True,
                       text=True)
    lines = r.stderr.strip().splitlines()
    if r.returncode != 2 or len(lines) != 1:
        failures.append(f"--shape '{bad}': exit {r.returncode}, stderr {r.stderr!r}")
r = subprocess.run([clbn, "bench", "--shape"], capture_output=True, text=True)
if r.returncode != 2:
    failures.append(f"--shape without a value: exit {r.returncode}")

for f in failures:
    print("FAIL:", f)
print(f"{len(failures)} failures")
sys.exit(1 if failures else 0)
