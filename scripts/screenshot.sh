#!/usr/bin/env bash
# Runs the real cxr-triage window under Xvfb on a folder and saves a PNG of it once every study
# is scored (and the top study and its heat map are on screen).
#
#   scripts/screenshot.sh DIR OUT.png
#
# Uses the binary in $CXR_TRIAGE_BIN when set, and builds one (cargo build --release) otherwise.
# Installs nothing. Needs: xvfb (Xvfb, xvfb-run), mesa-vulkan-drivers (software Vulkan for wgpu)
# and xauth. Extra arguments after OUT.png go to cxr-triage (for example --labels FILE.csv).
# Set CXR_TRIAGE_SIZE=WIDTHxHEIGHT for another screen size (default 1440x900).
# The decision store is a fresh temporary file: the screenshot never touches real decisions
# (CXR_TRIAGE_SCREENSHOT_DB=postgres://… points it at a test server's store instead).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 DIR OUT.png [cxr-triage options]" >&2
    exit 2
fi
dir=$1
out=$2
shift 2

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${CXR_TRIAGE_BIN:-}
if [ -z "$bin" ]; then
    (cd "$here" && cargo build --release --quiet)
    bin="$here/target/release/cxr-triage"
fi
for tool in xvfb-run Xvfb; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: $tool is missing: sudo apt-get install xvfb xauth mesa-vulkan-drivers" >&2
        exit 1
    fi
done

size=${CXR_TRIAGE_SIZE:-1440x900}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out_abs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
rm -f "$out_abs"

# Run from the repository so the shipped model is found; keep preferences in the temporary folder.
cd "$here"
mkdir -m 700 "$tmp/runtime"
HOME="$tmp" XDG_DATA_HOME="$tmp/data" XDG_CONFIG_HOME="$tmp/config" XDG_RUNTIME_DIR="$tmp/runtime" \
CXR_TRIAGE_SCREENSHOT="$out_abs" CXR_TRIAGE_STATS=1 \
    timeout 900 xvfb-run -a -s "-screen 0 ${size}x24" \
    "$bin" "$dir" --db "${CXR_TRIAGE_SCREENSHOT_DB:-$tmp/decisions.sqlite3}" --reader "Screenshot" "$@"

if [ ! -s "$out_abs" ]; then
    echo "error: no screenshot was written" >&2
    exit 1
fi
echo "$out_abs"
