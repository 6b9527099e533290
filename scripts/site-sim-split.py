#!/usr/bin/env python3
"""Splits a labelled folder's labels.csv into two halves by patient, for the site simulation.

Keeps only `normal` and `pneumonia` rows, groups them by `patient_id`, shuffles the patients of
each label with a seed and puts half of each label's patients on each side. Writes two CSV files
that `cxr-triage import` reads (columns `path,label`, absolute paths): `--learn` (the labels a
reader would give the site, to adapt on) and `--other` (the other half, only for measuring).
`--limit N` keeps only N labels of the learning half (stratified, same seed), to time `adapt`
on fewer labels. `--other-from REPORT.json` takes the measuring half from an `eval` report's
cases instead (for example the validation part of a folder the shipped model was partly trained
on, so that it is measured only on films it never learned from); the learning half is then the
rest.

Usage: scripts/site-sim-split.py LABELS.csv --learn FILE --other FILE [--seed S] [--limit N]
           [--other-from REPORT.json]
"""

import argparse
import csv
import json
import os
import random


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("labels")
    ap.add_argument("--learn", required=True)
    ap.add_argument("--other", required=True)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--other-from")
    args = ap.parse_args()
    base = os.path.dirname(os.path.abspath(args.labels))
    by_label = {"normal": {}, "pneumonia": {}}
    with open(args.labels, newline="") as f:
        for row in csv.DictReader(f):
            label = row["label"].strip().lower()
            if label in by_label:
                by_label[label].setdefault(row["patient_id"], []).append(
                    os.path.join(base, row["path"])
                )
    rng = random.Random(args.seed)
    learn, other = [], []
    if args.other_from:
        with open(args.other_from) as f:
            measured = {os.path.join(base, c["path"]) for c in json.load(f)["cases"]}
        for label in ("normal", "pneumonia"):
            for p in sorted(by_label[label]):
                for path in by_label[label][p]:
                    side = other if path in measured else learn
                    side.append((path, label.upper()))
    for label in ("normal", "pneumonia") if not args.other_from else ():
        patients = sorted(by_label[label])
        rng.shuffle(patients)
        half = len(patients) // 2
        for i, p in enumerate(patients):
            side = learn if i < half else other
            side.extend((path, label.upper()) for path in by_label[label][p])
    if args.limit is not None and args.limit < len(learn):
        # Stratified: keep each label's share of the learning half.
        kept = []
        for label in ("NORMAL", "PNEUMONIA"):
            rows = [r for r in learn if r[1] == label]
            n = round(args.limit * len(rows) / len(learn))
            kept.extend(rows[:n])
        learn = kept
    for name, rows in ((args.learn, learn), (args.other, other)):
        with open(name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label"])
            w.writerows(sorted(rows))
    count = lambda rows, l: sum(1 for r in rows if r[1] == l)
    print(
        f"learn: {len(learn)} ({count(learn, 'PNEUMONIA')} pneumonia), "
        f"other: {len(other)} ({count(other, 'PNEUMONIA')} pneumonia)"
    )


if __name__ == "__main__":
    main()
