#!/usr/bin/env bash
# cli_io_faults: the command-line tools meet a full disk (ENOSPC), a read-only file system
# (EROFS) and a permission error (EACCES) on every file they save, injected by the file-I/O
# hook (io_fault.c, preloaded): each exits 3 with one line on stderr naming the error, the old
# files are byte for byte as they were, and no temporary file is left. Saves: `clbn run`'s
# state file and outputs, `clbn train --save`'s weights and batch-norm states, `clbn tune`'s
# tuning file, the --json reports of `clbn bench` and `clbn validate`.
# Usage: cli_io_faults.sh CLBN_BINARY HOOK_LIBRARY WORK_DIR
set -u
CLBN=$1
HOOK=$2
WORK=$3
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK" || exit 1
failures=0
checks=0
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}
# A sanitized tool has its runtime first; the hook then comes after it, which is fine.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"

"${PYTHON:-/usr/bin/python3}" - <<'PY' || fail "numpy could not write the inputs"
import numpy as np
r = np.random.default_rng(1)
np.save("x.npy", r.normal(3, 2, (4, 3, 5, 5)).astype("<f4"))
np.save("dy.npy", r.normal(0, 1, (4, 3, 5, 5)).astype("<f4"))
PY

# A snapshot of a folder: every file's path and checksum, sorted.
snapshot() { (cd "$1" && find . -type f -exec sha256sum {} + | sort -k2); }

# expect_io NAME ERRNO FOLDER ARGS...: runs clbn ARGS with saves under FOLDER failing with
# ERRNO, and checks exit 3, one line on stderr naming the error, FOLDER unchanged.
expect_io() {
    local name=$1 err=$2 folder=$3
    shift 3
    local want
    case $err in
    ENOSPC) want="No space left on device" ;;
    EROFS) want="Read-only file system" ;;
    EACCES) want="Permission denied" ;;
    esac
    checks=$((checks + 1))
    local before
    before=$(snapshot "$folder")
    rm -f hook.log
    CLBN_IO_FAULT=$err CLBN_IO_FAULT_PATH="$WORK/$folder" CLBN_IO_FAULT_LOG="$WORK/hook.log" \
        LD_PRELOAD="$HOOK" "$CLBN" "$@" >stdout.txt 2>stderr.txt
    local rc=$?
    if [ "$rc" -ne 3 ]; then
        fail "$name ($err): exit $rc, expected 3 ($(head -c 300 stderr.txt))"
    elif [ "$(wc -l <stderr.txt)" -ne 1 ]; then
        fail "$name ($err): $(wc -l <stderr.txt) lines on stderr, expected 1:"
        sed 's/^/    /' stderr.txt
    elif ! grep -q "$want" stderr.txt; then
        fail "$name ($err): the message does not say \"$want\": $(cat stderr.txt)"
    else
        echo "ok   $name ($err): $(cat stderr.txt)"
    fi
    [ -s hook.log ] || fail "$name ($err): the hook injected nothing"
    [ "$(snapshot "$folder")" = "$before" ] || {
        fail "$name ($err): $folder changed:"
        diff <(echo "$before") <(snapshot "$folder") | sed 's/^/    /'
    }
}

# clbn run: the state file (and the outputs in --out).
mkdir -p run
"$CLBN" run train --x x.npy --state run/state.clbn --out run/out0 || fail "baseline clbn run"
for err in ENOSPC EROFS EACCES; do
    expect_io "clbn run train" $err run run train --x x.npy --state "$WORK/run/state.clbn" \
        --out "$WORK/run/out1"
    expect_io "clbn run backward" $err run run backward --x x.npy --dy dy.npy \
        --state "$WORK/run/state.clbn" --out "$WORK/run/out2"
done

# clbn train --save: the batch-norm states and the weights of both networks.
"$CLBN" train --bn both --steps 20 --eval-every 20 --save saved >train.txt 2>&1 ||
    fail "baseline clbn train --save: $(tail -3 train.txt)"
for err in ENOSPC EROFS EACCES; do
    expect_io "clbn train --save" $err saved train --bn both --steps 20 --eval-every 20 \
        --seed 2 --save "$WORK/saved"
done
"$CLBN" train --eval saved >eval.txt 2>&1 || fail "the saved networks no longer load"

# clbn tune: the tuning file in the cache folder.
mkdir -p cache
CLBN_CACHE_DIR="$WORK/cache" "$CLBN" tune --shape 2,16,8,8 --runs 2 >tune.txt 2>&1 ||
    fail "baseline clbn tune: $(tail -3 tune.txt)"
for err in ENOSPC EROFS EACCES; do
    CLBN_CACHE_DIR="$WORK/cache" expect_io "clbn tune" $err cache tune --shape 2,16,8,8 --runs 2
done

# clbn bench --json and clbn validate --json: their reports.
mkdir -p reports
# validate checks one device here: the suite's CLBN_EXPECT_DEVICES (all the test devices) would
# fail it for the device count, whatever the hook does.
unset CLBN_EXPECT_DEVICES
"$CLBN" bench --shape 2,4,4,4 --runs 2 --json reports/bench.json >/dev/null 2>&1 ||
    fail "baseline clbn bench --json"
"$CLBN" validate --device pthread --suite quick --json reports/validate.json >validate.txt 2>&1 ||
    fail "baseline clbn validate --json: $(tail -3 validate.txt)"
for err in ENOSPC EROFS EACCES; do
    expect_io "clbn bench --json" $err reports bench --shape 2,4,4,4 --runs 2 \
        --json "$WORK/reports/bench.json"
    expect_io "clbn validate --json" $err reports validate --device pthread --suite quick \
        --json "$WORK/reports/validate.json"
done

echo "$checks file-fault checks, $failures failures"
[ "$failures" -eq 0 ]
