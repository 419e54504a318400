#!/usr/bin/env bash
# Instructions per packet of the flow-cache hit path, counted by callgrind (this machine has
# no hardware performance counters; instruction counts are exact and repeatable).
#
# Runs `vrouter-perf pipeline --scenario flow-hit-10k --runs 1 --no-repeat` under callgrind
# twice, with SMALL and LARGE packet counts. Setup, warm-up and everything else are identical in both, so
# (instructions(LARGE) - instructions(SMALL)) / (LARGE - SMALL) is the cost of one packet in
# the timed loop: Pipeline::process on batches of 64, plus the benchmark's own per-batch
# verdict check (a few instructions per packet). The same subtraction per source file and
# function (callgrind_annotate; inlined code is attributed to its source file) shows where
# the instructions go.
#
# Usage: scripts/callgrind-hit-path.sh [SMALL LARGE]   (packets; defaults 64000 320000)
# Environment: CARGO_TARGET_DIR (default: <workspace>/target), SCENARIO (default flow-hit-10k),
#              TOP (rows of the breakdown, default 25), KEEP=1 keeps the callgrind files.
set -euo pipefail

small=${1:-64000}
large=${2:-320000}
scenario=${SCENARIO:-flow-hit-10k}
top=${TOP:-25}

if ! [[ $small =~ ^[0-9]+$ && $large =~ ^[0-9]+$ ]] || ((large <= small)); then
    echo "usage: $0 [SMALL LARGE] with SMALL < LARGE packet counts" >&2
    exit 2
fi
for tool in valgrind callgrind_annotate cargo awk; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found" >&2; exit 1; }
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
binary=$target_dir/release/vrouter-perf

echo "building release (CARGO_TARGET_DIR=$target_dir)..." >&2
(cd "$root" && CARGO_TARGET_DIR=$target_dir cargo build --release -p perf --quiet)

work=$(mktemp -d "${TMPDIR:-/tmp}/callgrind-hit-path.XXXXXX")
cleanup() {
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "callgrind files kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# Runs the scenario with $1 packets under callgrind; prints total instructions (Ir).
count() {
    local packets=$1
    local out=$work/callgrind.$packets
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$binary" pipeline --scenario "$scenario" --packets "$packets" --runs 1 --no-repeat \
        >"$work/stdout.$packets" 2>"$work/valgrind.$packets" || {
        echo "$0: run with $packets packets failed:" >&2
        cat "$work/stdout.$packets" "$work/valgrind.$packets" >&2
        exit 1
    }
    # "summary: N" is the total event count in callgrind's output format.
    awk '/^summary:/ { print $2; found = 1 } END { if (!found) exit 1 }' "$out"
}

# Per (file:function) instruction counts of a callgrind file: "count<TAB>file:function".
breakdown() {
    callgrind_annotate --inclusive=no --auto=no --threshold=100 "$1" 2>/dev/null |
        awk '$1 ~ /^[0-9,]+$/ && $0 ~ /:/ && $0 !~ /PROGRAM TOTALS/ {
                n = $1; gsub(",", "", n)
                line = $0
                sub(/^ *[0-9,]+ *(\([ 0-9.]+%\))? */, "", line)
                sub(/ \[[^]]*\]$/, "", line)
                print n "\t" line
            }'
}

echo "running $scenario under callgrind with $small and $large packets..." >&2
ir_small=$(count "$small")
ir_large=$(count "$large")
delta=$((large - small))

breakdown "$work/callgrind.$small" >"$work/small.tsv"
breakdown "$work/callgrind.$large" >"$work/large.tsv"

echo "scenario:            $scenario (vrouter-perf pipeline, batches of 64 x 64 B frames)"
echo "instructions:        $ir_small ($small packets), $ir_large ($large packets)"
awk -v a="$ir_small" -v b="$ir_large" -v d="$delta" \
    'BEGIN { printf "instructions/packet: %.1f\n", (b - a) / d }'
echo
echo "where they go (instructions/packet by source file and the function it is inlined into):"
awk -F'\t' -v d="$delta" -v top="$top" '
    NR == FNR { small[$2] = $1; next }
    { per = ($1 - small[$2]) / d; if (per >= 0.5) printf "%8.1f  %s\n", per, $2 }
' "$work/small.tsv" "$work/large.tsv" | sort -rn | awk -v top="$top" 'NR <= top'
