#!/bin/sh
# Compiles every cl/*.cl file offline with clang as OpenCL C 1.2 with fp64 disabled, so a stray
# double (or anything else a strict OpenCL 1.2 device would refuse) fails here even though the
# CPU device used by the other tests happens to support fp64.
#
# Usage: check_offline.sh <cl-source-dir> [clang]
# The files form one program in the order common.cl, stats.cl, apply.cl, backward.cl, rows.cl (the
# library's order); common.cl holds helpers the others use. Checked: common.cl alone, common.cl
# followed by each other file, and the whole program in library order. Any other *.cl file in the
# directory is checked as common.cl + that file.
set -u

cl_dir=${1:?usage: check_offline.sh <cl-source-dir> [clang]}
clang=${2:-${CLANG:-clang}}

# A missing compiler is a failure, not a skip: without it nothing below would be checked.
if ! command -v "$clang" >/dev/null 2>&1; then
    echo "FAIL: clang not found ('$clang'); install clang (Debian: apt-get install clang)" >&2
    exit 1
fi

flags="-x cl -cl-std=CL1.2 -Xclang -finclude-default-header -Xclang -cl-ext=-cl_khr_fp64 -Werror -fsyntax-only"
targets="spir spir64"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/clbn-clcheck.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

# compile <label> <file>...: concatenates the files (with #line markers so diagnostics name the
# original file and line) and compiles the result for every target. Returns nonzero on failure.
compile() {
    label=$1
    shift
    out="$tmp/unit.cl"
    : >"$out"
    for f in "$@"; do
        printf '#line 1 "%s"\n' "$f" >>"$out"
        cat "$f" >>"$out"
        printf '\n' >>"$out"
    done
    rc=0
    for t in $targets; do
        # shellcheck disable=SC2086 # flags are meant to split
        if ! "$clang" -target "$t" $flags "$out" >"$tmp/log" 2>&1; then
            echo "FAIL: $label (target $t)"
            cat "$tmp/log"
            rc=1
        elif [ -s "$tmp/log" ]; then
            cat "$tmp/log"
        fi
    done
    return $rc
}

# Self-test: the same flags must accept clean OpenCL C 1.2 and reject a stray double, in a type
# and in an unsuffixed literal; otherwise this script could pass without checking anything.
cat >"$tmp/clean.cl" <<'CL'
kernel void self_test(global float *a) { a[get_global_id(0)] *= 2.0f; }
CL
cat >"$tmp/double_type.cl" <<'CL'
kernel void self_test(global float *a) { double d = a[0]; a[0] = (float)d; }
CL
cat >"$tmp/double_literal.cl" <<'CL'
kernel void self_test(global float *a) { a[0] = a[0] * 0.5; }
CL
if ! compile "self-test: clean snippet" "$tmp/clean.cl"; then
    echo "FAIL: self-test: the flags reject a clean OpenCL C 1.2 kernel: $flags" >&2
    exit 1
fi
for bad in double_type double_literal; do
    if compile "self-test: $bad" "$tmp/$bad.cl" >"$tmp/selftest.log" 2>&1; then
        echo "FAIL: self-test: a stray double ($bad) compiles; fp64 is not disabled by: $flags" >&2
        exit 1
    fi
    if ! grep -q -e 'cl_khr_fp64' -e 'double' "$tmp/selftest.log"; then
        echo "FAIL: self-test: $bad failed for another reason than fp64:" >&2
        cat "$tmp/selftest.log" >&2
        exit 1
    fi
done
echo "self-test ok: clean kernel accepted, stray double rejected"

order="common.cl stats.cl apply.cl backward.cl rows.cl"
fail=0
for f in $order; do
    if [ ! -f "$cl_dir/$f" ]; then
        echo "FAIL: missing $cl_dir/$f"
        fail=1
    fi
done
[ $fail -eq 0 ] || exit 1

common="$cl_dir/common.cl"
checked=0
compile "common.cl alone" "$common" || fail=1
checked=$((checked + 1))
for path in "$cl_dir"/*.cl; do
    [ "$path" = "$common" ] && continue
    compile "common.cl + $(basename "$path")" "$common" "$path" || fail=1
    checked=$((checked + 1))
done
program=""
for f in $order; do
    program="$program $cl_dir/$f"
done
# shellcheck disable=SC2086
compile "whole program ($order)" $program || fail=1
checked=$((checked + 1))

if [ $fail -ne 0 ]; then
    echo "FAIL: some OpenCL sources do not compile as OpenCL C 1.2 without fp64"
    exit 1
fi
echo "ok: $checked compilation units, targets: $targets"
