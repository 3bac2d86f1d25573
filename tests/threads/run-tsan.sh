#!/usr/bin/env bash
# The thread tests under ThreadSanitizer: configures a TSan build in DIR (default
# /tmp/clbn-tsan-build), builds only test_threads and what it links, and runs it through ctest
# (test_threads on the default device and, where the build's device folder holds PoCL,
# test_threads_pocl_pthread on PoCL's pthread driver). Their ctest ENVIRONMENT carries the test
# devices (the build's ICD folder, as for every test) and TSAN_OPTIONS (halt_on_error=1,
# second_deadlock_stack=1, suppressions=tests/tsan.supp: the OpenCL drivers only).
# Exits nonzero on a failed test or on any ThreadSanitizer report.
# Usage: bash tests/threads/run-tsan.sh [DIR]   (CLBN_JOBS: parallel build jobs, default 2)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-/tmp/clbn-tsan-build}
jobs=${CLBN_JOBS:-2}
mkdir -p "$dir"

cmake -S "$repo" -B "$dir" -DCLBN_BUILD_TESTS=ON -DCLBN_SANITIZE=thread \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$dir/run-tsan.configure.log" 2>&1 ||
    { cat "$dir/run-tsan.configure.log"; exit 1; }
cmake --build "$dir" --target test_threads -j "$jobs"

log="$dir/run-tsan.test.log"
status=0
ctest --test-dir "$dir" -R '^test_threads' --output-on-failure --no-tests=error >"$log" 2>&1 ||
    status=$?
cat "$log"
# halt_on_error makes a report fail its test; one that reached the log without failing it (a
# report at exit, say) still fails the run.
if grep -q "WARNING: ThreadSanitizer" "$log"; then
    echo "run-tsan.sh: ThreadSanitizer reported (see above)" >&2
    exit 1
fi
exit "$status"
