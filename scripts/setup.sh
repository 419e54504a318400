#!/usr/bin/env bash
# Installs what building and testing the vRouter needs on Debian 12 (run as root).
# Idempotent: apt skips what is installed. Sourced by demo.sh and test.sh.
set -euo pipefail

PACKAGES=(clang llvm libbpf-dev linux-libc-dev iproute2 iputils-ping traceroute iperf3
          ethtool tcpdump nftables conntrack netsniff-ng valgrind python3)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  # rustup's default location when PATH lacks it (non-login shells).
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install a stable Rust toolchain (rustup) first" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "note: not root; namespace tests will be skipped with a message" >&2
fi
