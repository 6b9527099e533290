#!/usr/bin/env bash
# Times `cxr-triage adapt` for 100, 300 and 600 local labels (issue: learning from the site).
# The labels are real ones, of Kermany training films (half NORMAL, half PNEUMONIA, the first in
# name order) copied to OUT: only the time is measured here. The shipped model trained on these
# films, so adapt is expected to refuse them as "not better"; it trains and measures all the same.
#
# Usage: scripts/adapt-timing.sh [OUT_DIR] [SIZES...]   (default /tmp/adapt-timing 100 300 600)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/adapt-timing}
shift || true
SIZES=${*:-100 300 600}
DATA=${DATA:-../shared/data/kermany-224/train}
BIN=${CXR_TRIAGE_BIN:-target/release/cxr-triage}
[ -x "$BIN" ] || cargo build --release
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
for n in $SIZES; do
    dir="$OUT/$n"
    rm -rf "$dir"
    mkdir -p "$dir/films"
    echo "path,label" > "$dir/labels.csv"
    for label in NORMAL PNEUMONIA; do
        mapfile -t files < <(find "$DATA/$label" -maxdepth 1 -type f | sort | head -n $((n / 2)))
        for f in "${files[@]}"; do
            copy="$dir/films/${label}-$(basename "$f")"
            cp "$f" "$copy"
            echo "$(realpath "$copy"),$label" >> "$dir/labels.csv"
        done
    done
    "$BIN" score "$dir/films" --db "$dir/site.sqlite3" --top 0 > /dev/null
    "$BIN" import --csv "$dir/labels.csv" --reader timing --db "$dir/site.sqlite3" > /dev/null
    start=$(date +%s.%N)
    status=0
    "$BIN" adapt --db "$dir/site.sqlite3" --out "$dir/weights/site" --folder "$dir/films" \
        > "$dir/adapt.txt" 2>&1 || status=$?
    end=$(date +%s.%N)
    printf '%4d local labels: adapt %.1f s wall clock (exit %d: %s)\n' "$n" \
        "$(echo "$end - $start" | bc)" "$status" "$(tail -1 "$dir/adapt.txt")"
done
