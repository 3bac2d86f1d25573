#!/usr/bin/env bash
# cli_bad_input: every kind of bad input to `clbn run` exits 2 (an unwritable output: 3) with one line on stderr, writes
# no file into --out and leaves the --state file byte-for-byte as it was.
# Usage: bad_input.sh CLBN_BINARY WORK_DIR
set -u
CLBN=$1
WORK=$2
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK" || exit 1

failures=0
checks=0
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# mknpy FILE DESCR SHAPE FORTRAN NBYTES [MAJOR]: a .npy file written byte by byte, so malformed
# ones can be made too. Float32 data cycles through a few distinct values (1, 2, 0.5, 3, -1, 4,
# -2, 1.5) so every channel has a nonzero variance; other dtypes get zero bytes.
mknpy() {
    local file=$1 descr=$2 shape=$3 fortran=$4 nbytes=$5 major=${6:-1}
    local dict="{'descr': '$descr', 'fortran_order': $fortran, 'shape': $shape, }"
    local len=$((${#dict} + 1))
    local pad=$(((64 - (10 + len) % 64) % 64))
    len=$((len + pad))
    {
        printf '\x93NUMPY'
        printf "\\x$(printf %02x "$major")\\x00"
        printf "\\x$(printf %02x $((len & 255)))\\x$(printf %02x $((len >> 8)))"
        printf '%s%*s\n' "$dict" "$pad" ''
        if [ "$descr" = "<f4" ]; then
            local words=('\x00\x00\x80\x3f' '\x00\x00\x00\x40' '\x00\x00\x00\x3f'
                '\x00\x00\x40\x40' '\x00\x00\x80\xbf' '\x00\x00\x80\x40'
                '\x00\x00\x00\xc0' '\x00\x00\xc0\x3f')
            local i
            for ((i = 0; i < nbytes / 4; i++)); do printf "${words[i % 8]}"; done
        else
            head -c "$nbytes" /dev/zero
        fi
    } >"$file"
}

# Good inputs.
mknpy x.npy '<f4' '(2, 3, 2, 2)' False 96
mknpy dy.npy '<f4' '(2, 3, 2, 2)' False 96
mknpy x_c4.npy '<f4' '(2, 4, 2, 2)' False 128
mknpy x_nc.npy '<f4' '(4, 3)' False 48
mknpy x_3d.npy '<f4' '(2, 3, 4)' False 96
mknpy x_m0.npy '<f4' '(0, 3, 2, 2)' False 0
mknpy x_c0.npy '<f4' '(2, 0, 2, 2)' False 0
mknpy x_m1.npy '<f4' '(1, 3, 1, 1)' False 12
mknpy x_m1_nc.npy '<f4' '(1, 3)' False 12
mknpy g3.npy '<f4' '(3,)' False 12
mknpy g4.npy '<f4' '(4,)' False 16
mknpy g33.npy '<f4' '(3, 1)' False 12
mknpy dy_bad.npy '<f4' '(2, 3, 2, 1)' False 48
# Bad ones.
mknpy f8.npy '<f8' '(2, 3, 2, 2)' False 192
mknpy i4.npy '<i4' '(2, 3, 2, 2)' False 96
mknpy trunc.npy '<f4' '(2, 3, 2, 2)' False 92
mknpy extra.npy '<f4' '(2, 3, 2, 2)' False 100
mknpy negshape.npy '<f4' '(2, -3, 2, 2)' False 96
mknpy version9.npy '<f4' '(2, 3, 2, 2)' False 96 9
mknpy nodescr.npy '<f4' '(2, 3, 2, 2)' False 96
sed -i 's/descr/dtype/' nodescr.npy
printf 'this is not an npy file\n' >garbage.npy
head -c 20 x.npy >short_header.npy
: >empty.npy
printf '\x93NUMPY\x01\x00\xff\xff{' >hugeheader.npy
mkdir adir.npy

"$CLBN" --version >/dev/null || fail "clbn --version"
"$CLBN" --help >/dev/null || fail "clbn --help"
"$CLBN" run --help >/dev/null || fail "clbn run --help"
"$CLBN" devices >devices.txt || fail "clbn devices"
grep -q 'device 0:0' devices.txt || fail "clbn devices lists no device 0:0"
"$CLBN" >/dev/null 2>&1
[ $? -eq 2 ] || fail "clbn without a command should exit 2"
"$CLBN" frobnicate >/dev/null 2>&1
[ $? -eq 2 ] || fail "clbn with an unknown command should exit 2"

# The state every bad call must leave alone.
"$CLBN" run train --x x.npy --state state.bin --out base || fail "baseline train"
for f in y mean invstd running_mean running_var; do
    [ -f "base/$f.npy" ] || fail "baseline train wrote no $f.npy"
done
cp state.bin state.orig
state_sum=$(sha256sum <state.bin)
"$CLBN" run infer --x x.npy --state nosaved.bin --out base2 || fail "baseline infer (new state)"
cp nosaved.bin nosaved.orig
"$CLBN" run backward --x x.npy --dy dy.npy --state bwmade.bin --out base3 ||
    fail "baseline backward (new state)"
"$CLBN" run infer --x x.npy --no-track --state untracked.bin --out base4 ||
    fail "baseline infer --no-track (new state)"
cp nosaved.bin nosaved.orig
cp bwmade.bin bwmade.orig
cp untracked.bin untracked.orig
cp state.bin corrupt.bin
printf '\x55' | dd of=corrupt.bin bs=1 seek=40 conv=notrunc status=none
cp corrupt.bin corrupt.orig
head -c 30 state.bin >truncated.bin
cp truncated.bin truncated.orig
: >not_a_dir

# expect_bad NAME ARGS...: runs `clbn run ARGS --out out` (out absent) and `... --out outdir`
# (outdir present and empty) and checks the rules after each. The exit status is 2, or
# $EXPECT_STATUS (3: an output that cannot be written).
expect_bad() {
    local name=$1
    shift
    local out rc lines want=${EXPECT_STATUS:-2}
    for out in out outdir; do
        rm -rf out outdir new_state.bin
        mkdir outdir
        checks=$((checks + 1))
        "$CLBN" run "$@" --out "$out" >stdout.txt 2>stderr.txt
        rc=$?
        lines=$(wc -l <stderr.txt)
        if [ "$rc" -ne "$want" ]; then
            fail "$name: exit status $rc, expected $want ($(head -c 300 stderr.txt))"
        elif [ "$lines" -ne 1 ]; then
            fail "$name: $lines lines on stderr, expected 1:"
            sed 's/^/    /' stderr.txt
        else
            echo "ok   $name: $(cat stderr.txt)"
        fi
        [ -s stdout.txt ] && fail "$name: wrote to stdout"
        if [ "$out" = out ] && [ -e out ]; then
            fail "$name: created --out out"
        fi
        if [ -n "$(ls -A outdir)" ]; then
            fail "$name: wrote into --out: $(ls -A outdir | tr '\n' ' ')"
        fi
        [ "$(sha256sum <state.bin)" = "$state_sum" ] || {
            fail "$name: changed state.bin"
            cp state.orig state.bin
        }
        for f in nosaved bwmade untracked; do
            cmp -s $f.bin $f.orig || fail "$name: changed $f.bin"
        done
        cmp -s corrupt.bin corrupt.orig || fail "$name: changed corrupt.bin"
        cmp -s truncated.bin truncated.orig || fail "$name: changed truncated.bin"
        [ -e new_state.bin ] && fail "$name: created the new --state file"
        ls -A | grep -q '^\.\?new_state\.bin' && fail "$name: left a temporary state file"
    done
}

S=(--state state.bin)
N=(--state new_state.bin)

# Missing and malformed files.
expect_bad "missing --x file" train --x missing.npy "${S[@]}"
expect_bad "missing --dy file" backward --x x.npy --dy missing.npy "${S[@]}"
expect_bad "missing --gamma file" train --x x.npy --gamma missing.npy "${N[@]}"
expect_bad "garbage file" train --x garbage.npy "${S[@]}"
expect_bad "empty file" train --x empty.npy "${S[@]}"
expect_bad "header cut short" train --x short_header.npy "${S[@]}"
expect_bad "header length past the end" train --x hugeheader.npy "${S[@]}"
expect_bad "truncated data" train --x trunc.npy "${S[@]}"
expect_bad "bytes after the data" train --x extra.npy "${S[@]}"
expect_bad "negative dimension" train --x negshape.npy "${S[@]}"
expect_bad "format version 9" train --x version9.npy "${S[@]}"
expect_bad "header without descr" train --x nodescr.npy "${S[@]}"
expect_bad "directory as --x" train --x adir.npy "${S[@]}"
# Dtypes and order.
expect_bad "float64 --x" train --x f8.npy "${S[@]}"
expect_bad "int32 --x" train --x i4.npy "${S[@]}"
expect_bad "float64 --dy" backward --x x.npy --dy f8.npy "${S[@]}"
# Shapes.
expect_bad "2-D x with --layout nchw" train --x x_nc.npy --layout nchw "${S[@]}"
expect_bad "4-D x with --layout nc" train --x x.npy --layout nc "${N[@]}"
expect_bad "4-D x with --layout nc, existing state" train --x x.npy --layout nc "${S[@]}"
expect_bad "3-D x without --layout" train --x x_3d.npy "${S[@]}"
expect_bad "3-D x with --layout nhwc" infer --x x_3d.npy --layout nhwc "${S[@]}"
expect_bad "4 channels against a 3-channel state" train --x x_c4.npy "${S[@]}"
expect_bad "4 channels against a 3-channel state (infer)" infer --x x_c4.npy "${S[@]}"
expect_bad "gamma of 4 for 3 channels" train --x x.npy --gamma g4.npy "${N[@]}"
expect_bad "gamma of shape (3, 1)" train --x x.npy --gamma g33.npy "${N[@]}"
expect_bad "running var of 4 for 3 channels" infer --x x.npy --running-var g4.npy "${N[@]}"
expect_bad "dy shaped unlike x" backward --x x.npy --dy dy_bad.npy "${S[@]}"
expect_bad "no channels (C = 0)" train --x x_c0.npy "${N[@]}"
# m rules.
expect_bad "m = 0 (N = 0) train" train --x x_m0.npy "${S[@]}"
expect_bad "m = 0 (N = 0) infer" infer --x x_m0.npy "${N[@]}"
expect_bad "m = 0 (N = 0) backward" backward --x x_m0.npy --dy x_m0.npy "${S[@]}"
expect_bad "m = 1 with tracking, new state" train --x x_m1.npy "${N[@]}"
expect_bad "m = 1 with tracking, existing state" train --x x_m1.npy "${S[@]}"
expect_bad "m = 1 with tracking, nc" train --x x_m1_nc.npy --layout nc "${N[@]}"
expect_bad "m = 1 with tracking, backward" backward --x x_m1.npy --dy x_m1.npy "${N[@]}"
# Conflicting and malformed options.
expect_bad "--cumulative with --momentum" train --x x.npy --cumulative --momentum 0.1 "${N[@]}"
expect_bad "--frozen with --no-track" train --x x.npy --frozen --no-track "${N[@]}"
expect_bad "--frozen with --no-track (backward)" backward --x x.npy --dy dy.npy --frozen --no-track "${S[@]}"
expect_bad "--momentum unlike the state's" train --x x.npy --momentum 0.5 "${S[@]}"
expect_bad "--cumulative unlike the state" train --x x.npy --cumulative "${S[@]}"
expect_bad "--eps unlike the state's" train --x x.npy --eps 1e-3 "${S[@]}"
expect_bad "--no-track unlike the state" infer --x x.npy --no-track "${S[@]}"
expect_bad "--no-scale unlike the state" train --x x.npy --no-scale "${S[@]}"
expect_bad "--activation unlike the state's" train --x x.npy --activation relu "${S[@]}"
expect_bad "--gamma with an existing state" train --x x.npy --gamma g3.npy "${S[@]}"
expect_bad "--running-mean with an existing state" infer --x x.npy --running-mean g3.npy "${S[@]}"
expect_bad "--gamma with --no-scale" train --x x.npy --gamma g3.npy --no-scale "${N[@]}"
expect_bad "--running-mean with --no-track" train --x x.npy --running-mean g3.npy --no-track "${N[@]}"
expect_bad "--momentum 0" train --x x.npy --momentum 0 "${N[@]}"
expect_bad "--momentum 1.5" train --x x.npy --momentum 1.5 "${N[@]}"
expect_bad "--momentum abc" train --x x.npy --momentum abc "${S[@]}"
expect_bad "--eps -1" train --x x.npy --eps -1 "${N[@]}"
expect_bad "--eps nan" train --x x.npy --eps nan "${N[@]}"
expect_bad "--layout foo" train --x x.npy --layout foo "${S[@]}"
expect_bad "--activation tanh" train --x x.npy --activation tanh "${N[@]}"
expect_bad "unknown option" train --x x.npy --bogus "${S[@]}"
expect_bad "unknown op" fit --x x.npy "${S[@]}"
expect_bad "--x given twice" train --x x.npy --x x.npy "${S[@]}"
expect_bad "--frozen with a value" train --x x.npy --frozen=yes "${S[@]}"
expect_bad "--dy with train" train --x x.npy --dy dy.npy "${S[@]}"
expect_bad "backward without --dy" backward --x x.npy "${S[@]}"
expect_bad "--y without an activation" backward --x x.npy --dy dy.npy --y dy.npy "${S[@]}"
expect_bad "missing --x" train "${S[@]}"
expect_bad "--device that matches nothing" train --x x.npy --device no-such-device-xyz "${S[@]}"
# State files.
expect_bad "corrupt state" train --x x.npy --state corrupt.bin
expect_bad "truncated state" train --x x.npy --state truncated.bin
expect_bad "backward from a state without saved statistics" backward --x x.npy --dy dy.npy --state nosaved.bin
expect_bad "backward from a state made by backward" backward --x x.npy --dy dy.npy --state bwmade.bin
expect_bad "backward from an untracked state made by infer" backward --x x.npy --dy dy.npy --state untracked.bin
EXPECT_STATUS=3 expect_bad "state path in a missing directory" train --x x.npy --state no/such/dir/s.bin

# Without --out, and with --out naming a file.
checks=$((checks + 2))
"$CLBN" run train --x x.npy "${S[@]}" 2>stderr.txt
[ $? -eq 2 ] && [ "$(wc -l <stderr.txt)" -eq 1 ] || fail "missing --out: expected exit 2 and one line"
"$CLBN" run train --x x.npy "${S[@]}" --out not_a_dir 2>stderr.txt
[ $? -eq 2 ] && [ "$(wc -l <stderr.txt)" -eq 1 ] || fail "--out naming a file: expected exit 2 and one line"
[ -s not_a_dir ] && fail "--out naming a file: wrote into it"
[ "$(sha256sum <state.bin)" = "$state_sum" ] || fail "--out cases changed state.bin"

# The good cases next to the bad ones: the same options as the state's are accepted, m = 1
# without tracking gives y = beta, and a good call does change the state.
"$CLBN" run train --x x.npy --momentum 0.1 --eps 1e-5 --activation none "${S[@]}" --out good1 ||
    fail "options equal to the state's were refused"
[ "$(sha256sum <state.bin)" != "$state_sum" ] || fail "a good train left the state unchanged"
"$CLBN" run train --x x_m1.npy --no-track --out good2 || fail "m = 1 without tracking was refused"
if [ -f good2/y.npy ]; then
    # beta = 0 by default, so y is 3 float zeros after the 64-byte header.
    [ "$(tail -c 12 good2/y.npy | od -An -tx1 | tr -d ' \n')" = "000000000000000000000000" ] ||
        fail "m = 1 without tracking: y is not beta (0)"
    [ -e good2/running_mean.npy ] && fail "--no-track wrote running_mean.npy"
fi
"$CLBN" run backward --x x.npy --dy dy.npy --state state.bin --out good3 ||
    fail "backward from a trained state"
for f in dx dgamma dbeta running_mean running_var; do
    [ -f "good3/$f.npy" ] || fail "backward wrote no $f.npy"
done
ls -A good1 good3 | grep -q tmp && fail "temporary files left in --out"

# What numpy writes is read: big-endian float32 and Fortran order (numpy's choice for a
# Fortran-contiguous array) give the same y as x.npy, byte for byte.
"${PYTHON:-/usr/bin/python3}" - <<'PY' || fail "numpy could not write the big-endian and Fortran-order inputs"
import numpy as np
a = np.load("x.npy")
np.save("be.npy", a.astype(">f4"))
np.save("fortran.npy", np.asfortranarray(a))
np.save("fortran_be.npy", np.asfortranarray(a.astype(">f4")))
np.save("fortran_nc.npy", np.asfortranarray(np.load("x_nc.npy")))
for f in ("fortran.npy", "fortran_be.npy", "fortran_nc.npy"):
    assert b"'fortran_order': True" in open(f, "rb").read(128), f
assert b"'descr': '>f4'" in open("be.npy", "rb").read(128)
PY
"$CLBN" run train --x x.npy --no-track --out ref_c || fail "train --x x.npy --no-track"
"$CLBN" run train --x x_nc.npy --layout nc --no-track --out ref_nc || fail "train --x x_nc.npy"
for f in be fortran fortran_be; do
    checks=$((checks + 1))
    "$CLBN" run train --x $f.npy --no-track --out got_$f || fail "$f.npy was refused"
    cmp -s ref_c/y.npy got_$f/y.npy || fail "$f.npy: y differs from x.npy's"
done
checks=$((checks + 1))
"$CLBN" run train --x fortran_nc.npy --layout nc --no-track --out got_fortran_nc ||
    fail "fortran_nc.npy was refused"
cmp -s ref_nc/y.npy got_fortran_nc/y.npy || fail "fortran_nc.npy: y differs from x_nc.npy's"

echo "$checks bad-input checks, $failures failures"
[ "$failures" -eq 0 ]
