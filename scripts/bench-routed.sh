#!/usr/bin/env bash
# Routed pod-to-pod through the vrouter vs the kernel's ip_forward, same topology, same run.
#
#   pod1 (10.0.1.2) -- vp1 [node] vp2 -- pod2 (10.0.2.2)
#
# Kernel rounds: the node namespace forwards with ip_forward=1 (addresses on vp1/vp2).
# vrouter rounds: no kernel addresses on vp1/vp2; vrouter (worker pinned to CPU 1) and
# vrouter-control own them. Rounds alternate (kernel, vrouter, kernel, vrouter, ...).
# Traffic generators (iperf3 client and server, trafgen) are pinned to CPU 0.
#
# Prints one line per measurement and a summary table (medians) with the ratio vrouter/kernel.
# Usage: scripts/bench-routed.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 5 s)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
SECS="${2:-5}"
source scripts/setup.sh >/dev/null
cargo build --release --bins --locked -q
BIN="$PWD/target/release"
P="vbr$$"
DIR="$(mktemp -d /tmp/vrouter-bench.XXXXXX)"
PIDS=()
cleanup() {
  set +e
  stop_vrouter
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for ns in node pod1 pod2; do ip netns del "$P-$ns" 2>/dev/null; done
  rm -rf "$DIR"
}
VR_PIDS=()
stop_vrouter() {
  for pid in "${VR_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${VR_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  VR_PIDS=()
}
trap cleanup EXIT INT TERM

for ns in node pod1 pod2; do ip netns add "$P-$ns"; ip -n "$P-$ns" link set lo up; done
for i in 1 2; do
  ip link add "vp$i" netns "$P-node" numrxqueues 1 numtxqueues 1 type veth \
     peer eth0 netns "$P-pod$i" numrxqueues 1 numtxqueues 1
  ip -n "$P-node" link set "vp$i" up
  ip -n "$P-pod$i" addr add "10.0.$i.2/24" dev eth0
  ip -n "$P-pod$i" link set eth0 up
  ip -n "$P-pod$i" route add default via "10.0.$i.1"
done
cat > "$DIR/vrouter.toml" <<'TOML'
[[port]]
name = "vp1"
addresses = ["10.0.1.1/24"]
[[port]]
name = "vp2"
addresses = ["10.0.2.1/24"]
TOML

kernel_on() {
  ip -n "$P-node" addr add 10.0.1.1/24 dev vp1
  ip -n "$P-node" addr add 10.0.2.1/24 dev vp2
  ip netns exec "$P-node" sysctl -qw net.ipv4.ip_forward=1
}
kernel_off() {
  ip netns exec "$P-node" sysctl -qw net.ipv4.ip_forward=0
  ip -n "$P-node" addr flush dev vp1
  ip -n "$P-node" addr flush dev vp2
}
vrouter_on() {
  rm -rf "$DIR/state"
  ip netns exec "$P-node" "$BIN/vrouter" --socket "$DIR/vrouter.sock" --cores 1 --idle adaptive \
     --log-level warn & VR_PIDS+=($!)
  for _ in $(seq 100); do [ -S "$DIR/vrouter.sock" ] && break; sleep 0.05; done
  ip netns exec "$P-node" "$BIN/vrouter-control" --vrouter-socket "$DIR/vrouter.sock" \
     --listen "$DIR/control.sock" --state-dir "$DIR/state" --config "$DIR/vrouter.toml" \
     --log-level warn & VR_PIDS+=($!)
  for _ in $(seq 100); do
    ip netns exec "$P-pod1" ping -c 1 -W 0.2 10.0.2.2 >/dev/null 2>&1 && break; sleep 0.1
  done
}

# Flush neighbor caches so both datapaths start from the same state.
warm() { ip netns exec "$P-pod1" ping -c 2 -i 0.2 -W 1 10.0.2.2 >/dev/null; }

tcp() {
  ip netns exec "$P-pod2" taskset -c 0 iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  local server=$!; sleep 0.3
  local bps
  bps=$(ip netns exec "$P-pod1" taskset -c 0 iperf3 -c 10.0.2.2 -p 5201 -t "$SECS" -J \
        | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))')
  wait "$server" 2>/dev/null || true
  echo "$bps"
}
# 64-byte frames (18-byte UDP payload, 64 flows by source port) from trafgen pinned to CPU 0,
# as fast as it can send; delivered = frames received on pod2's interface (so a slow socket
# reader in pod2 does not count against the datapath). Prints: delivered_pps offered_pps loss%.
udp() {
  local gw src packets r1 r2 t1 t2
  gw=$(ip netns exec "$P-node" cat /sys/class/net/vp1/address)
  src=$(ip netns exec "$P-pod1" cat /sys/class/net/eth0/address)
  printf '{ eth(da=%s, sa=%s), ipv4(saddr=10.0.1.2, daddr=10.0.2.2, ttl=64), udp(sp=dinc(1000, 1063, 1), dp=9), fill(0x00, 18) }\n' \
    "$gw" "$src" > "$DIR/udp64.trafgen"
  packets=$((SECS * 250000))
  r1=$(ip netns exec "$P-pod2" cat /sys/class/net/eth0/statistics/rx_packets)
  t1=$(date +%s.%N)
  ip netns exec "$P-pod1" taskset -c 0 trafgen --dev eth0 --conf "$DIR/udp64.trafgen" --cpus 1 \
     --num "$packets" -q >/dev/null 2>&1
  t2=$(date +%s.%N)
  sleep 0.3
  r2=$(ip netns exec "$P-pod2" cat /sys/class/net/eth0/statistics/rx_packets)
  python3 -c "d=$r2-$r1; t=$t2-$t1; n=$packets; print(int(d/t), int(n/t), round(100.0*(n-d)/n, 2))"
}

declare -a K_TCP V_TCP K_PPS V_PPS K_OFF V_OFF K_LOSS V_LOSS
for round in $(seq "$ROUNDS"); do
  kernel_on; warm
  t=$(tcp); u=($(udp))
  K_TCP+=("$t"); K_PPS+=("${u[0]}"); K_OFF+=("${u[1]}"); K_LOSS+=("${u[2]}")
  echo "round $round kernel : TCP $((t/1000000)) Mbit/s, UDP 64B delivered ${u[0]} pps (offered ${u[1]}, loss ${u[2]}%)"
  kernel_off
  vrouter_on; warm
  t=$(tcp); u=($(udp))
  V_TCP+=("$t"); V_PPS+=("${u[0]}"); V_OFF+=("${u[1]}"); V_LOSS+=("${u[2]}")
  echo "round $round vrouter: TCP $((t/1000000)) Mbit/s, UDP 64B delivered ${u[0]} pps (offered ${u[1]}, loss ${u[2]}%)"
  stop_vrouter
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
kt=$(median "${K_TCP[@]}"); vt=$(median "${V_TCP[@]}")
kp=$(median "${K_PPS[@]}"); vp=$(median "${V_PPS[@]}")
ko=$(median "${K_OFF[@]}"); vo=$(median "${V_OFF[@]}")
kl=$(median "${K_LOSS[@]}"); vl=$(median "${V_LOSS[@]}")
echo
echo "| metric (median of $ROUNDS rounds, ${SECS} s each) | kernel ip_forward | vrouter | vrouter / kernel |"
echo "|---|---|---|---|"
awk -v k="$kt" -v v="$vt" 'BEGIN {printf "| iperf3 TCP, Mbit/s | %.0f | %.0f | %.2f |\n", k/1e6, v/1e6, v/k}'
awk -v k="$kp" -v v="$vp" 'BEGIN {printf "| UDP 64 B delivered, pps | %d | %d | %.2f |\n", k, v, v/k}'
awk -v k="$ko" -v v="$vo" 'BEGIN {printf "| UDP 64 B offered by trafgen, pps | %d | %d | |\n", k, v}'
echo "| UDP 64 B loss, % | $kl | $vl | |"
