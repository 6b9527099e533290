#!/usr/bin/env bash
# Builds the fuzz targets as `cargo fuzz build` does (libFuzzer, sanitizer coverage, AddressSanitizer)
# for machines without cargo-fuzz: `fuzz/build.sh`, then `fuzz/target/x86_64-unknown-linux-gnu/release/TARGET CORPUS_DIR`.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Zsanitizer=address -Cdebug-assertions -Coverflow-checks"
export ASAN_OPTIONS=detect_odr_violation=0
cargo +nightly build --release --target x86_64-unknown-linux-gnu --bins "$@"
