#!/bin/sh
# run.sh - builds and runs clbn's libFuzzer targets: each over its committed seed corpus and
# regression inputs, then fuzzed with a fixed seed for a fixed number of runs (reproducible),
# under AddressSanitizer (leaks included) and UndefinedBehaviorSanitizer. Any crash, leak,
# timeout, out-of-memory or sanitizer report fails the run (exit 1); the input is kept.
#
#   tests/fuzz/run.sh BUILD_DIR [TARGET...]          build, replay, fuzz (all targets: none named)
#   tests/fuzz/run.sh --replay BUILD_DIR [TARGET...] replay the committed inputs only (ctest)
#
# BUILD_DIR is configured with CC=clang CXX=clang++ cmake -S . -B BUILD_DIR -DCLBN_FUZZ=ON
# -DCLBN_BUILD_TESTS=ON (it is configured so if it does not exist). Two runs on different
# targets may share BUILD_DIR at once: the build step takes a lock, every run fuzzes in a
# scratch copy of the corpus of its own, and each process writes its own scratch files.
#
# Environment: FUZZ_SEED (default 1), FUZZ_RUNS_SCALE (a percentage of each target's runs,
# default 100), FUZZ_KEEP=1 keeps the scratch folder, CLBN_CACHE_DIR (fuzz_args' kernel cache;
# default BUILD_DIR/fuzz-kernel-cache, so the programs are built once, not every run).
#
# Calibration: each target's runs (params below) make about 60 s of fuzzing on the machine this
# was written on (2 cores, Debian 12, clang 14, PoCL pthread), the rate measured over a full
# run of all six, one after the other, from the committed corpus; fuzz_args also spends
# ~5 s setting up (three contexts, every program variant from the kernel cache; the first run
# in a build tree builds them: a minute more). FUZZ_RUNS_SCALE=10 gives a 6-s smoke run.
set -eu

replay=0
if [ "${1:-}" = "--replay" ]; then
    replay=1
    shift
fi
if [ $# -lt 1 ]; then
    sed -n '2,17p' "$0" >&2
    exit 2
fi
build=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
all="fuzz_npy fuzz_idx fuzz_state fuzz_weights fuzz_cache fuzz_args"
targets=${*:-$all}
for t in $targets; do
    case " $all " in
    *" $t "*) ;;
    *)
        echo "run.sh: unknown target $t (one of: $all)" >&2
        exit 2
        ;;
    esac
done

# Per target: runs (about 60 s each, see Calibration above; the rate is runs / seconds of the
# -runs phase) and the largest input.
params() {
    case $1 in
    fuzz_npy) runs=2000000 maxlen=4096 ;; # 33,000 runs/s (a file written and read, twice)
    fuzz_idx) runs=600000 maxlen=4096 ;; # 10,500 runs/s (two files, gzip, per input)
    fuzz_state) runs=19000000 maxlen=2048 ;; # 315,000 runs/s
    fuzz_weights) runs=24000000 maxlen=4096 ;; # 404,000 runs/s
    fuzz_cache) runs=43000000 maxlen=1024 ;; # 726,000 runs/s
    fuzz_args) runs=640000 maxlen=512 ;; # 11,000 runs/s (up to 8 entry-point calls per input)
    esac
}

seed=${FUZZ_SEED:-1}
scale=${FUZZ_RUNS_SCALE:-100}
bindir=$build/tests/fuzz

if [ $replay = 0 ]; then
    if [ ! -f "$build/CMakeCache.txt" ]; then
        CC=${CC:-clang} CXX=${CXX:-clang++} cmake -S "$src" -B "$build" -DCLBN_FUZZ=ON \
            -DCLBN_BUILD_TESTS=ON >/dev/null
    fi
    mkdir -p "$build"
    # One build at a time in a tree (two runs of this script may start together).
    set --
    for t in $targets; do set -- "$@" --target "$t"; done
    flock "$build/.fuzz-build.lock" cmake --build "$build" -j2 "$@"
fi

export CLBN_CACHE_DIR="${CLBN_CACHE_DIR:-$build/fuzz-kernel-cache}"
export POCL_DEVICES="${POCL_DEVICES:-pthread}"
# Every report is fatal; leaks are checked (the OpenCL driver's own are suppressed);
# allocations a parser cannot satisfy return NULL, so its out-of-memory paths run, while
# libFuzzer's -malloc_limit_mb still reports any single allocation over the limit.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:allocator_may_return_null=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1:handle_abort=1"
export LSAN_OPTIONS="suppressions=$src/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"

work=$(mktemp -d "${TMPDIR:-/tmp}/clbn-fuzz-XXXXXX")
# The files fuzz_npy and fuzz_idx rewrite every run: in memory when there is /dev/shm.
if [ -w /dev/shm ]; then
    scratch=$(mktemp -d /dev/shm/clbn-fuzz-XXXXXX)
else
    scratch=$work
fi
export CLBN_FUZZ_TMPDIR="$scratch"
# shellcheck disable=SC2317 # run by the trap
cleanup() {
    [ "$scratch" != "$work" ] && rm -rf "$scratch"
    if [ "${FUZZ_KEEP:-0}" = 1 ]; then
        echo "run.sh: scratch kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Exit 1 when the log holds a sanitizer's or libFuzzer's report, whatever the exit status.
reported() {
    grep -E -q 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:|SUMMARY: |fuzz check failed' "$1"
}

# Address-space randomization changes where code lies, and libFuzzer's comparison tables with
# it: without it a seed gives the same run every time. (Where personality() is not allowed,
# runs are only reproducible in what they test, not input for input.)
norand=
if setarch "$(uname -m)" -R true 2>/dev/null; then
    norand="setarch $(uname -m) -R"
fi

status=0
for t in $targets; do
    bin=$bindir/$t
    if [ ! -x "$bin" ]; then
        echo "run.sh: $bin is not built" >&2
        exit 2
    fi
    params "$t"
    runs=$((runs * scale / 100))
    log=$work/$t.log
    art=$work/$t-artifacts/
    mkdir -p "$art"
    # -reload=0: no periodic re-read of the corpus folder (a timer), so a run is reproducible
    common="-rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=20 -max_len=$maxlen -reload=0 -artifact_prefix=$art"

    # 1. Replay: every committed input, one by one (libFuzzer writes nothing in this mode).
    files=$(find "$here/corpus/$t" "$here/regressions/$t" -type f 2>/dev/null | sort)
    if [ -n "$files" ]; then
        start=$(date +%s)
        # shellcheck disable=SC2086
        if ! "$bin" $common $files >"$log" 2>&1 || reported "$log"; then
            echo "FAIL $t: replaying the committed inputs (log: $log)" >&2
            tail -n 40 "$log" >&2
            FUZZ_KEEP=1
            status=1
            continue
        fi
        echo "ok   $t: replayed $(echo "$files" | wc -l) inputs in $(($(date +%s) - start)) s"
    else
        echo "run.sh: $t has no committed inputs" >&2
        status=1
    fi
    [ $replay = 1 ] && continue

    # 2. Fuzz: a scratch copy of the corpus (new inputs go there, never into the committed one).
    corpus=$work/$t-corpus
    mkdir -p "$corpus"
    # shellcheck disable=SC2086
    [ -n "$files" ] && cp $files "$corpus/"
    start=$(date +%s)
    # shellcheck disable=SC2086
    if ! $norand "$bin" $common -seed="$seed" -runs="$runs" -print_final_stats=1 "$corpus" \
        >>"$log" 2>&1 || reported "$log"; then
        echo "FAIL $t: fuzzing (seed $seed, $runs runs; log: $log, inputs: $art)" >&2
        grep -E -A 30 'ERROR: |runtime error:|fuzz check failed' "$log" | head -n 60 >&2
        FUZZ_KEEP=1
        status=1
        continue
    fi
    secs=$(($(date +%s) - start))
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 | sed -E 's/.*(cov: [0-9]+ ft: [0-9]+).*/\1/')
    echo "ok   $t: seed $seed, $runs runs in $secs s ($done_line, corpus $(find "$corpus" -type f | wc -l) inputs)"
done
exit $status
