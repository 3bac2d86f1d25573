#!/usr/bin/env bash
# Every test of clbn, as the README's test command runs it (run from the repository root, as
# root on Debian 12; installs what is missing first):
#   1. the plain build: the whole suite on PoCL's two devices and Oclgrind;
#   2. AddressSanitizer + UndefinedBehaviorSanitizer (LeakSanitizer on, suppressions for the
#      OpenCL drivers only: tests/lsan.supp): the whole suite again, on PoCL's devices (the
#      simulator checks kernels, not host code, and ran in 1);
#   3. the fuzz targets (libFuzzer, clang, ASan + UBSan) over their corpora, then a fixed seed
#      and a fixed number of runs each (tests/fuzz/run.sh);
#   4. ThreadSanitizer: the thread tests (tests/threads/run-tsan.sh).
# Usage: tools/test-all.sh [STEP...]   (steps: plain asan fuzz tsan; default all)
# Trees: build/ (plain), build-asan/, build-fuzz/, build-tsan/. Prints each step's time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup-debian.sh --tests
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(plain asan fuzz tsan)
jobs=2
summary=()

step() {
    local name=$1 t0=$SECONDS
    shift
    echo "=== test-all: $name"
    "$@"
    summary+=("$name: $((SECONDS - t0)) s")
    echo "=== test-all: $name passed in $((SECONDS - t0)) s"
}

plain() {
    cmake -S . -B build -DCLBN_BUILD_TESTS=ON
    cmake --build build -j$jobs
    CLBN_EXPECT_DEVICES=3 ctest --test-dir build -j$jobs --output-on-failure --no-tests=error
}

asan() {
    cmake -S . -B build-asan -DCLBN_BUILD_TESTS=ON -DCLBN_SANITIZE=address,undefined \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLBN_TEST_OCLGRIND=OFF
    cmake --build build-asan -j$jobs
    ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1 \
        LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0" \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        CLBN_EXPECT_DEVICES=2 ctest --test-dir build-asan -j$jobs --output-on-failure \
        --no-tests=error
}

# Half of each fuzz target's calibrated runs (about 30 s each): with the other steps, the whole
# command stays under 25 minutes on a two-core machine. FUZZ_RUNS_SCALE=100 for the full minute.
fuzz() {
    export FUZZ_RUNS_SCALE=${FUZZ_RUNS_SCALE:-50}
    CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCLBN_BUILD_TESTS=ON -DCLBN_FUZZ=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLBN_TEST_OCLGRIND=OFF
    bash tests/fuzz/run.sh build-fuzz
}

tsan() {
    bash tests/threads/run-tsan.sh build-tsan
}

for s in "${steps[@]}"; do
    case $s in
    plain | asan | fuzz | tsan) step "$s" "$s" ;;
    *)
        echo "test-all: unknown step $s (plain asan fuzz tsan)" >&2
        exit 2
        ;;
    esac
done
printf 'test-all: %s\n' "${summary[@]}"
