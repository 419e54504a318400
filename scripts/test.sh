#!/usr/bin/env bash
# The test command of the README and of CI: installs what it needs, builds the release
# binaries the out-of-process tests start, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

echo "== building release binaries (vrouter, vrouter-control, vrouterctl, vrouter-perf)"
cargo build --release --bins --locked
export VROUTER_BIN_DIR="$PWD/target/release"

echo "== running tests"
# Namespace tests serialise themselves; unit and property tests run in parallel.
cargo test --workspace --locked -- --test-threads=2
