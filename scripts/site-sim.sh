#!/usr/bin/env bash
# Simulates a site learning from its readers on a labelled folder (default: ../shared/data/nih-adult):
# scores the folder into a fresh decision store, imports the labels of a seeded patient-level half
# as a reader would, adapts the model, then measures the model before and after adaptation on the
# other half (its labels imported into a second store, used only for measuring).
#
# Usage: scripts/site-sim.sh [OUT_DIR] [LIMIT]
#   OUT_DIR  where everything is written (default /tmp/site-sim; never inside the data folder)
#   LIMIT    use only this many labels of the learning half (default: all of it)
# Environment: DATA (the folder holding labels.csv and images/), SEED (2026), CXR_TRIAGE_BIN,
# OTHER_FROM (an eval report.json whose cases are the measuring half: for nih-adult, which the
# shipped model was partly trained on, reports/cxrnet-v3-nih-adult-validation/report.json).
# When adapt refuses (too few labels, or not better on its held-out labels), the other half is
# still measured with the model before adaptation.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/site-sim}
LIMIT=${2:-}
DATA=${DATA:-../shared/data/nih-adult}
SEED=${SEED:-2026}
BIN=${CXR_TRIAGE_BIN:-target/release/cxr-triage}
[ -x "$BIN" ] || cargo build --release
rm -rf "$OUT"
mkdir -p "$OUT"
python3 scripts/site-sim-split.py "$DATA/labels.csv" --seed "$SEED" \
    --learn "$OUT/learn.csv" --other "$OUT/other.csv" ${LIMIT:+--limit "$LIMIT"} \
    ${OTHER_FROM:+--other-from "$OTHER_FROM"}

echo "== the site: score the folder, import the readers' labels of one half, adapt"
"$BIN" score "$DATA/images" --db "$OUT/site.sqlite3" --top 0 | tail -2
"$BIN" import --csv "$OUT/learn.csv" --reader simulated-reader --db "$OUT/site.sqlite3"
start=$(date +%s.%N)
adapted=yes
"$BIN" adapt --db "$OUT/site.sqlite3" --out "$OUT/weights/site" --folder "$DATA/images" \
    > "$OUT/adapt.txt" 2>&1 || adapted=no
cat "$OUT/adapt.txt"
end=$(date +%s.%N)
echo "adapt took $(echo "$end - $start" | bc) s (wall clock, reading the studies included)"

echo "== the other half, measured with the model before and after adaptation"
"$BIN" score "$DATA/images" --db "$OUT/other.sqlite3" --top 0 | tail -1
if [ "$adapted" = yes ]; then
    "$BIN" score "$DATA/images" --db "$OUT/other.sqlite3" --weights "$OUT/weights/site.json" \
        --top 0 | tail -1
fi
"$BIN" import --csv "$OUT/other.csv" --reader truth --db "$OUT/other.sqlite3"
echo "-- before (the shipped model)"
"$BIN" eval --db "$OUT/other.sqlite3" --out "$OUT/eval-before"
if [ "$adapted" = yes ]; then
    echo "-- after (adapted)"
    "$BIN" eval --db "$OUT/other.sqlite3" --weights "$OUT/weights/site.json" --out "$OUT/eval-after"
else
    echo "-- adapt refused (see above): no adapted model to measure"
fi
