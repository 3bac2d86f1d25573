#!/usr/bin/env python3
"""cli_tune_smoke: `clbn tune` on one small shape stores a tuning-*.txt file in the cache folder
($CLBN_CACHE_DIR) and exits 0; bad options exit 2 with one line; --dry-run stores nothing; an
unwritable cache folder exits 3; then `clbn validate` loads the stored set, records it (source
"file" and its values) for the native target and runs the defaults beside it. Never judges the
times.
Usage: tune_smoke.py CLBN_BINARY WORK_DIR"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

clbn, work = sys.argv[1], sys.argv[2]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
failures = []
FIELDS = ("cpu_reduce_items_per_cu", "cpu_elementwise_items_per_cu", "gpu_work_group",
          "gpu_groups_per_cu")


def run(args, cache, **kw):
    env = dict(os.environ, CLBN_CACHE_DIR=cache)
    env.pop("CLBN_EXPECT_DEVICES", None)  # this test runs one device on purpose
    return subprocess.run([clbn] + args, capture_output=True, text=True, env=env, **kw)


def tuning_files(folder):
    return sorted(glob.glob(os.path.join(folder, "tuning-*.txt")))


# The stored set.
cache = os.path.join(work, "cache")
os.makedirs(cache)
r = run(["tune", "--shape", "2,16,8,8", "--runs", "2"], cache)
files = tuning_files(cache)
stored = {}
if r.returncode != 0:
    failures.append(f"tune exited {r.returncode}: {r.stderr.strip()}")
elif len(files) != 1:
    failures.append(f"tune left {len(files)} tuning files in {cache}: {files}")
else:
    if f"stored in {files[0]}" not in r.stdout:
        failures.append(f"tune did not print the file's path {files[0]}:\n{r.stdout}")
    for line in open(files[0]):
        m = re.fullmatch(r"(\w+) (\d+)\n", line)
        if m and m.group(1) in FIELDS:
            stored[m.group(1)] = int(m.group(2))
    for field in FIELDS:
        if field not in stored:
            failures.append(f"{files[0]} has no {field}")
    if "score ms" not in r.stdout or "tuned:" not in r.stdout:
        failures.append(f"tune printed no table or winning set:\n{r.stdout}")

# Bad options: exit 2, one line, nothing stored.
bad_cache = os.path.join(work, "bad-cache")
os.makedirs(bad_cache)
for args in (["--shape", "bad"], ["--shape", "2,0,8,8"], ["--shape", "2,16,8"], ["--shape"],
             ["--runs", "0"], ["--rounds", "x"], ["--profile", "nosuch"], ["--frobnicate"]):
    r = run(["tune"] + args, bad_cache)
    lines = r.stderr.strip().splitlines()
    if r.returncode != 2 or len(lines) != 1:
        failures.append(f"tune {' '.join(args)}: exit {r.returncode}, stderr {r.stderr!r}")
if tuning_files(bad_cache):
    failures.append("a tune with bad options stored a set")

# --dry-run stores nothing.
dry_cache = os.path.join(work, "dry-cache")
os.makedirs(dry_cache)
r = run(["tune", "--shape", "16,8", "--runs", "1", "--rounds", "1", "--dry-run"], dry_cache)
if r.returncode != 0 or tuning_files(dry_cache):
    failures.append(f"tune --dry-run: exit {r.returncode}, files {tuning_files(dry_cache)}, "
                    f"stderr {r.stderr.strip()!r}")

# A cache folder that cannot be made (below a regular file): exit 3, the I/O error.
r = run(["tune", "--shape", "16,8", "--runs", "1", "--rounds", "1"], "/dev/null/clbn-cache")
if r.returncode != 3 or "CLBN_ERROR_IO" not in r.stderr:
    failures.append(f"tune with an unwritable cache folder: exit {r.returncode}, "
                    f"stderr {r.stderr.strip()!r}")

# validate loads and records the stored set, and runs the defaults beside it.
if stored:
    out = os.path.join(work, "validate.json")
    r = run(["validate", "--suite", "quick", "--json", out], cache)
    if r.returncode != 0:
        failures.append(f"validate exited {r.returncode}:\n{r.stdout[-2000:]}{r.stderr}")
    if "tuning file:" not in r.stdout or "tuning default:" not in r.stdout:
        failures.append(f"validate printed no tuning lines:\n{r.stdout[-2000:]}")
    if os.path.exists(out):
        doc = json.load(open(out))
        by_profile = {d["profile"]: d for d in doc["devices"]}
        native = by_profile.get("native", {}).get("tuning")
        beside = by_profile.get("native+default-tuning", {}).get("tuning")
        if not native or native.get("source") != "file":
            failures.append(f"validate's native target ran tuning {native}, not the file's")
        elif any(native.get(k) != v for k, v in stored.items()):
            failures.append(f"validate recorded {native}, the file holds {stored}")
        if not beside or beside.get("source") != "default":
            failures.append(f"no defaults' target beside the tuned one: {beside}")
        for d in doc["devices"]:
            if not d.get("results"):
                failures.append(f"profile {d['profile']}: no results")
    else:
        failures.append("validate wrote no JSON")

for f in failures:
    print("FAIL:", f)
print(f"{len(failures)} failures")
sys.exit(1 if failures else 0)
