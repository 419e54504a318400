#!/usr/bin/env bash
# Control-plane install rate: a configuration with N routes (default 1,000,000; about 60% /24,
# the rest /16-/23, /25-/32 and a few /8-/15, all via one gateway) applied with
# `vrouterctl apply -f` through vrouter-control to a running vrouter. Reports the wall-clock
# time of the whole transaction (CLI parse and validation, daemon validation and persistence,
# dataplane validation, plan and left-right publication) and the resulting rate.
# Usage: scripts/bench-routes.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
source scripts/setup.sh >/dev/null
cargo build --release --bins --locked -q
BIN="$PWD/target/release"
P="vrt$$"
DIR="$(mktemp -d /tmp/vrouter-routes.XXXXXX)"
PIDS=()
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  ip netns del "$P-node" 2>/dev/null; ip netns del "$P-pod" 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

ip netns add "$P-node"; ip netns add "$P-pod"
ip link add vp1 netns "$P-node" numrxqueues 1 numtxqueues 1 type veth peer eth0 netns "$P-pod" \
   numrxqueues 1 numtxqueues 1
ip -n "$P-node" link set vp1 up; ip -n "$P-pod" link set eth0 up

python3 - "$N" > "$DIR/routes.toml" <<'PY'
import random, sys
n = int(sys.argv[1]); rnd = random.Random(42); seen = set()
print('[[port]]\nname = "vp1"\naddresses = ["10.0.1.1/24"]\n')
while len(seen) < n:
    r = rnd.random()
    length = 24 if r < 0.6 else rnd.randint(16, 23) if r < 0.89 else rnd.randint(25, 32) if r < 0.99 else rnd.randint(8, 15)
    addr = rnd.randrange(11 << 24, 224 << 24) & ~((1 << (32 - length)) - 1)
    if (addr, length) in seen: continue
    seen.add((addr, length))
    a = ".".join(str((addr >> s) & 255) for s in (24, 16, 8, 0))
    print(f'[[route]]\nprefix = "{a}/{length}"\nvia = "10.0.1.2"\n')
PY
echo "generated $N routes ($(du -h "$DIR/routes.toml" | cut -f1) of TOML)"

ip netns exec "$P-node" "$BIN/vrouter" --socket "$DIR/vrouter.sock" --cores 1 --log-level ${LOG:-warn} & PIDS+=($!)
for _ in $(seq 100); do [ -S "$DIR/vrouter.sock" ] && break; sleep 0.05; done
ip netns exec "$P-node" "$BIN/vrouter-control" --vrouter-socket "$DIR/vrouter.sock" \
   --listen "$DIR/control.sock" --state-dir "$DIR/state" --log-level ${LOG:-warn} & PIDS+=($!)
for _ in $(seq 100); do "$BIN/vrouterctl" --socket "$DIR/control.sock" status >/dev/null 2>&1 && break; sleep 0.05; done

start=$(date +%s.%N)
"$BIN/vrouterctl" --socket "$DIR/control.sock" apply -f "$DIR/routes.toml"
end=$(date +%s.%N)
installed=$("$BIN/vrouterctl" --socket "$DIR/control.sock" -j route list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["routes"]))')
vr_rss=$(awk '/VmRSS/{print $2}' /proc/"${PIDS[0]}"/status)
python3 -c "t=$end-$start; print(f'applied $N routes in {t:.2f} s: {$N/t/1e6:.2f} M routes/s end to end; dataplane lists $installed routes; vrouter RSS {$vr_rss/1024:.0f} MiB')"
