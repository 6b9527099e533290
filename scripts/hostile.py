#!/usr/bin/env python3
"""Hostile-file trial: generates damaged, truncated, oversized and crafted files from seed studies
and runs `cxr-triage scan` and `cxr-triage score` on each file alone, with a time limit, recording
the exit status, wall time and peak memory (GNU time's maximum resident set size).

    scripts/hostile.py SEEDS_DIR OUT_DIR [--bin target/release/cxr-triage] [--per-seed N]

SEEDS_DIR holds a few small JPEG, PNG and DICOM files (for example fuzz/corpus/load_*). OUT_DIR
receives the generated files (one per folder) and `results.csv`. Prints a summary: how many files,
how many ended with a signal (abort, stack overflow, out-of-memory kill), how many ran past the
time limit, and the largest peak memory. Needs python3 and GNU time (/usr/bin/time).
"""

import argparse
import csv
import os
import random
import struct
import subprocess
import sys
import zlib

LIMIT_S = 20


def mutations(data, rng, n):
    """n damaged copies of data: byte flips, truncations, inserted and repeated chunks, huge
    lengths written over 4-byte fields."""
    out = []
    for i in range(n):
        b = bytearray(data)
        kind = i % 5
        if kind == 0:
            for _ in range(1 + rng.randrange(8)):
                at = rng.randrange(len(b))
                b[at] ^= 1 + rng.randrange(255)
        elif kind == 1:
            b = b[: rng.randrange(1, len(b))]
        elif kind == 2:
            at = rng.randrange(len(b))
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        elif kind == 3:
            at = rng.randrange(len(b))
            chunk = b[at : at + rng.randrange(1, 256)]
            b[at:at] = chunk * rng.randrange(2, 50)
        else:
            for _ in range(1 + rng.randrange(3)):
                at = rng.randrange(max(1, len(b) - 4))
                b[at : at + 4] = struct.pack("<I", rng.choice([0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF, 0x10000000]))
        out.append(bytes(b))
    return out


def dicom_element(group, element, vr, value):
    if len(value) % 2:
        value += b"\0"
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH", group, element) + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def part10(ts, body):
    meta = (
        dicom_element(2, 1, b"OB", b"\0\1")
        + dicom_element(2, 2, b"UI", b"1.2.840.10008.5.1.4.1.1.1")
        + dicom_element(2, 3, b"UI", b"2.25.1")
        + dicom_element(2, 0x10, b"UI", ts)
    )
    meta = dicom_element(2, 0, b"UL", struct.pack("<I", len(meta))) + meta
    return b"\0" * 128 + b"DICM" + meta + body


def crafted():
    """Files that caused trouble before: deep nesting in every encoding, deflate bombs, huge
    claimed lengths and sizes, decompression bombs in PNG, non-image files."""
    files = {}
    for levels in (100, 10_000):
        le = b"".join(
            struct.pack("<HH", 8, 0x1140) + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF)
            + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
            for _ in range(levels)
        )
        be = b"".join(
            struct.pack(">HH", 8, 0x1140) + b"SQ\0\0" + struct.pack(">I", 0xFFFFFFFF)
            + struct.pack(">HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
            for _ in range(levels)
        )
        files[f"nested_le_{levels}.dcm"] = part10(b"1.2.840.10008.1.2.1", le)
        files[f"nested_be_{levels}.dcm"] = part10(b"1.2.840.10008.1.2.2", be)
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        files[f"nested_deflated_{levels}.dcm"] = part10(b"1.2.840.10008.1.2.1.99", c.compress(le) + c.flush())
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = b"\0" * (1 << 20)
    zeros = b"".join(c.compress(mib) for _ in range(1024)) + c.flush()
    files["deflate_bomb_1gib.dcm"] = part10(b"1.2.840.10008.1.2.1.99", zeros)
    files["be_huge_pixels.dcm"] = part10(
        b"1.2.840.10008.1.2.2",
        struct.pack(">HH", 0x7FE0, 0x10) + b"OW\0\0" + struct.pack(">I", 0xFFFFFFF0) + b"\0" * 12000,
    )
    # A PNG header claiming 100,000 x 100,000 pixels.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    idat = zlib.compress(b"\0" * (1 << 20))
    files["png_bomb.png"] = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    # A JPEG header claiming 65,000 x 65,000 pixels.
    files["jpeg_huge_header.jpg"] = (
        b"\xff\xd8\xff\xc0\x00\x0b\x08" + struct.pack(">HH", 65000, 65000) + b"\x01\x01\x11\x00" + b"\xff\xd9"
    )
    files["empty.dcm"] = b""
    files["text.jpg"] = b"this is not an image\n" * 10
    files["zeros_1mib.png"] = b"\0" * (1 << 20)
    return files


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("seeds")
    ap.add_argument("out")
    ap.add_argument("--bin", default="target/release/cxr-triage")
    ap.add_argument("--per-seed", type=int, default=30)
    args = ap.parse_args()
    rng = random.Random(2026)
    os.makedirs(args.out, exist_ok=True)
    files = dict(crafted())
    for root, _, names in os.walk(args.seeds):
        for name in sorted(names):
            data = open(os.path.join(root, name), "rb").read()
            if not data:
                continue
            stem, ext = os.path.splitext(name)
            for i, m in enumerate(mutations(data, rng, args.per_seed)):
                files[f"{stem}_m{i}{ext}"] = m
    rows = []
    for i, (name, data) in enumerate(sorted(files.items())):
        folder = os.path.join(args.out, f"case{i:04d}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        for command in ("scan", "score"):
            extra = ["--csv", os.path.join(args.out, f"case{i:04d}-{command}.csv")] if command == "score" else []
            try:
                p = subprocess.run(
                    ["/usr/bin/time", "-f", "%e %M", args.bin, command, folder] + extra,
                    capture_output=True,
                    timeout=LIMIT_S,
                )
                last = p.stderr.decode(errors="replace").strip().splitlines()[-1]
                wall, kib = last.split()[-2:]
                # GNU time reports a signal as "Command terminated by signal N" above its line.
                signalled = b"terminated by signal" in p.stderr or p.returncode < 0
                rows.append((name, command, p.returncode, signalled, False, float(wall), int(kib)))
            except subprocess.TimeoutExpired:
                rows.append((name, command, None, False, True, float(LIMIT_S), 0))
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "command", "exit", "signalled", "timed_out", "wall_s", "peak_kib"])
        w.writerows(rows)
    signalled = [r for r in rows if r[3]]
    timed_out = [r for r in rows if r[4]]
    failed_runs = [r for r in rows if r[2] not in (0,) and not r[3] and not r[4]]
    peak = max(rows, key=lambda r: r[6])
    slowest = max(rows, key=lambda r: r[5])
    print(
        f"{len(files)} files, {len(rows)} runs (scan and score each): {len(signalled)} ended by a signal, "
        f"{len(timed_out)} ran past {LIMIT_S} s, {len(failed_runs)} exited non-zero without a signal; "
        f"peak memory {peak[6] / 1024:.0f} MiB ({peak[0]}, {peak[1]}); slowest {slowest[5]:.1f} s ({slowest[0]}, {slowest[1]})"
    )
    for r in signalled + timed_out:
        print("  ", r, file=sys.stderr)
    return 1 if signalled or timed_out else 0


if __name__ == "__main__":
    sys.exit(main())
