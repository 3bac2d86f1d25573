#!/usr/bin/env bash
# cli_train: `clbn train` end to end on Fashion-MNIST: a short run of both networks learns (test
# accuracy at least 50%, chance is 10%), writes its CSV, JSON and plot, saves networks that
# `--eval` reloads to the same test accuracy, and the one-at-a-time check collapses with batch
# statistics; bad input exits 2 writing nothing, an unwritable output exits 3.
# Usage: train_smoke.sh CLBN_BINARY WORK_DIR
set -u
CLBN=$1
WORK=$2
DATA=/usr/share/datasets/fashion-mnist
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK" || exit 1
failures=0
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}
[ -d "$DATA" ] || { echo "FAIL: $DATA is missing (Debian package dataset-fashion-mnist)"; exit 1; }

# One run: 400 steps of batches of 60, both networks, ReLU, learning rate 1.
"$CLBN" train --bn both --steps 400 --eval-every 100 --single-sample-check --csv c.csv \
    --json s.json --plot p.png --save saved >out.txt 2>err.txt || fail "the training run failed: $(cat err.txt)"
cat out.txt
python3 - s.json c.csv <<'EOF' || fail "the summary or the curves are wrong"
import json, sys, csv
s = json.load(open(sys.argv[1]))
nets = s["networks"]
assert [n["bn"] for n in nets] == [True, False], nets
for n in nets:
    for k in ("bn", "activation", "lr", "init", "steps", "test_accuracy", "steps_per_s", "bn_time_share"):
        assert k in n, k
    assert n["steps_per_s"] > 0 and 0 <= n["bn_time_share"] < 1, n
# Learning, against chance (10%): with batch norm 400 steps at learning rate 1 reach at least
# 70% (measured: 82%); without it that rate is too high and training is erratic (measured: 38%),
# so the margin there is 20%.
assert nets[0]["test_accuracy"] >= 0.70, nets[0]
assert nets[1]["test_accuracy"] >= 0.20, nets[1]
assert nets[0]["bn_time_share"] > 0 and nets[1]["bn_time_share"] == 0, nets
# One image at a time with its own statistics: every x-hat is 0, every prediction the same class,
# so at most the largest class share of the first 200 test images (Fashion-MNIST: under 20%).
bn = nets[0]
assert bn["single_sample_batch_stats_accuracy"] <= 0.20, bn
assert bn["single_sample_running_stats_accuracy"] >= 0.50, bn
rows = list(csv.DictReader(open(sys.argv[2])))
assert [r["step"] for r in rows] == ["100", "200", "300", "400"] * 2, rows
assert rows[-1]["network"] == "plain" and rows[0]["network"] == "bn"
EOF
[ "$(head -c 8 p.png | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] || fail "p.png is not a PNG"
ls -A | grep -q 'tmp-\|\.data-\|\.gp-' && fail "temporary files left: $(ls -A)"

# The saved networks reload to the test accuracy the run reported.
for net in bn plain; do
    want=$(python3 -c "import json;n=json.load(open('s.json'))['networks'];print('%.2f'%(100*[x for x in n if x['bn']==('$net'=='bn')][0]['test_accuracy']))")
    got=$("$CLBN" train --eval saved/$net 2>&1) || fail "--eval saved/$net: $got"
    echo "$got" | grep -q "test accuracy $want%" || fail "--eval saved/$net: '$got', expected $want%"
done

# expect NAME STATUS ARGS...: exits STATUS with one line on stderr and writes no file here.
expect() {
    local name=$1 want=$2
    shift 2
    mkdir -p empty && cd empty || exit 1
    "$CLBN" train "$@" >stdout.txt 2>stderr.txt
    local rc=$?
    local lines
    lines=$(wc -l <stderr.txt)
    [ "$rc" -eq "$want" ] || fail "$name: exit $rc, expected $want ($(cat stderr.txt))"
    [ "$lines" -eq 1 ] || fail "$name: $lines lines on stderr: $(cat stderr.txt)"
    rm -f stdout.txt stderr.txt
    [ -z "$(ls -A)" ] || fail "$name: wrote $(ls -A | tr '\n' ' ')"
    cd .. && rm -rf empty
}
O=(--steps 20 --eval-every 10 --json s.json --csv c.csv --plot p.png)
expect "unknown --bn value" 2 --bn maybe "${O[@]}"
expect "unknown --activation" 2 --activation tanh "${O[@]}"
expect "unknown --init" 2 --init ugly "${O[@]}"
expect "negative --lr" 2 --lr -1 "${O[@]}"
expect "unknown option" 2 --frobnicate 1 "${O[@]}"
expect "--batch 1 with batch norm" 2 --batch 1 --bn on "${O[@]}"
expect "missing data folder" 2 --data "$WORK/nothing" "${O[@]}"
mkdir -p cut mism
cp "$DATA"/* cut/ && cp "$DATA"/* mism/
gzip -dc "$DATA/train-images-idx3-ubyte.gz" | head -c 1000000 | gzip >cut/train-images-idx3-ubyte.gz
gzip -dc "$DATA/t10k-labels-idx1-ubyte.gz" | head -c 5008 >mism/t10k-labels-idx1-ubyte
rm mism/t10k-labels-idx1-ubyte.gz
expect "truncated images file" 2 --data "$WORK/cut" "${O[@]}"
expect "labels that do not match the images" 2 --data "$WORK/mism" "${O[@]}"
printf 'not a weights file' >bogus.clbnw && mkdir -p bogus && mv bogus.clbnw bogus/weights.clbnw
expect "--eval of a corrupt weights file" 2 --eval "$WORK/bogus"
expect "--json into a missing folder" 3 --steps 20 --eval-every 10 --bn off --json "$WORK/no/such/dir/s.json"

echo "cli_train: $failures failures"
[ "$failures" -eq 0 ]
