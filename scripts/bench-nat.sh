#!/usr/bin/env bash
# NAT through the vrouter vs the kernel (nftables masquerade and DNAT with conntrack, as
# kube-proxy's nftables mode does), same topology, same run.
#
#   pod1 (10.0.1.2) -- vp1 [node] ve0 (203.0.113.1) -- eth0 (203.0.113.2) ext
#
# ext has no route to 10.0.0.0/16: pod traffic only comes back if masqueraded. ext reaches the
# Service VIP 10.96.0.10 through the node (port 5201: iperf3, port 80: a short-connection
# server, both in pod1).
# Kernel rounds: node addresses on vp1/ve0, ip_forward=1, nftables: masquerade of 10.0.0.0/16
# out of ve0 and DNAT of the VIP. vrouter rounds: the same as [[snat]] and [[service]], no
# kernel addresses. Rounds alternate; the vrouter worker is pinned to CPU 1, generators and
# servers to CPU 0.
#
# Measures: iperf3 TCP pod1 -> ext (masquerade); UDP 64 B from trafgen (64 flows) pod1 -> ext
# delivered at ext's interface (masquerade); iperf3 TCP ext -> VIP (DNAT); new TCP connections
# per second ext -> VIP:80 from one sequential client (DNAT + conntrack setup per connection).
# Usage: scripts/bench-nat.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 5 s)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
SECS="${2:-5}"
source scripts/setup.sh >/dev/null
cargo build --release --bins --locked -q
BIN="$PWD/target/release"
P="vbn$$"
DIR="$(mktemp -d /tmp/vrouter-bench.XXXXXX)"
PIDS=()
VR_PIDS=()
stop_vrouter() {
  for pid in "${VR_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${VR_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  VR_PIDS=()
}
cleanup() {
  set +e
  stop_vrouter
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for ns in node pod1 ext; do ip netns del "$P-$ns" 2>/dev/null; done
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

for ns in node pod1 ext; do ip netns add "$P-$ns"; ip -n "$P-$ns" link set lo up; done
ip link add vp1 netns "$P-node" numrxqueues 1 numtxqueues 1 type veth \
   peer eth0 netns "$P-pod1" numrxqueues 1 numtxqueues 1
ip link add ve0 netns "$P-node" numrxqueues 1 numtxqueues 1 type veth \
   peer eth0 netns "$P-ext" numrxqueues 1 numtxqueues 1
ip -n "$P-node" link set vp1 up
ip -n "$P-node" link set ve0 up
ip -n "$P-pod1" addr add 10.0.1.2/24 dev eth0
ip -n "$P-pod1" link set eth0 up
ip -n "$P-pod1" route add default via 10.0.1.1
ip -n "$P-ext" addr add 203.0.113.2/24 dev eth0
ip -n "$P-ext" link set eth0 up
ip -n "$P-ext" route add 10.96.0.0/16 via 203.0.113.1

cat > "$DIR/vrouter.toml" <<'TOML'
[[port]]
name = "vp1"
addresses = ["10.0.1.1/24"]
[[port]]
name = "ve0"
addresses = ["203.0.113.1/24"]
[[snat]]
source = "10.0.0.0/16"
out = "ve0"
[[service]]
vip = "10.96.0.10:5201"
protocol = "tcp"
backends = ["10.0.1.2:5201"]
[[service]]
vip = "10.96.0.10:80"
protocol = "tcp"
backends = ["10.0.1.2:8080"]
TOML
cat > "$DIR/nat.nft" <<'NFT'
table ip benchnat {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 10.96.0.10 tcp dport 5201 dnat to 10.0.1.2:5201
    ip daddr 10.96.0.10 tcp dport 80 dnat to 10.0.1.2:8080
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 10.0.0.0/16 oifname "ve0" masquerade
  }
}
NFT
# A short-connection server (accept, answer, close) and a sequential client counting
# completed connections over SECS.
cat > "$DIR/server.py" <<'PY'
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(1024)
while True:
    c, _ = s.accept(); c.sendall(b"ok\n"); c.close()
PY
cat > "$DIR/client.py" <<'PY'
import socket, sys, time
end = time.time() + float(sys.argv[1]); n = 0; start = time.time()
while time.time() < end:
    c = socket.create_connection(("10.96.0.10", 80), timeout=2)
    if c.recv(8) == b"ok\n": n += 1
    c.close()
print(int(n / (time.time() - start)))
PY
ip netns exec "$P-pod1" taskset -c 0 python3 "$DIR/server.py" & PIDS+=($!)

kernel_on() {
  ip -n "$P-node" addr add 10.0.1.1/24 dev vp1
  ip -n "$P-node" addr add 203.0.113.1/24 dev ve0
  ip netns exec "$P-node" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$P-node" nft -f "$DIR/nat.nft"
}
kernel_off() {
  ip netns exec "$P-node" nft delete table ip benchnat
  ip netns exec "$P-node" sysctl -qw net.ipv4.ip_forward=0
  ip -n "$P-node" addr flush dev vp1
  ip -n "$P-node" addr flush dev ve0
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
    ip netns exec "$P-pod1" ping -c 1 -W 0.2 203.0.113.2 >/dev/null 2>&1 && break; sleep 0.1
  done
}
warm() { ip netns exec "$P-pod1" ping -c 2 -i 0.2 -W 1 203.0.113.2 >/dev/null; }

iperf() { # client-ns server-ns target
  ip netns exec "$2" taskset -c 0 iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  local server=$!; sleep 0.3
  ip netns exec "$1" taskset -c 0 iperf3 -c "$3" -p 5201 -t "$SECS" -J \
    | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))'
  wait "$server" 2>/dev/null || true
}
udp() { # prints: delivered_pps offered_pps
  local gw src packets r1 r2 t1 t2
  gw=$(ip netns exec "$P-node" cat /sys/class/net/vp1/address)
  src=$(ip netns exec "$P-pod1" cat /sys/class/net/eth0/address)
  printf '{ eth(da=%s, sa=%s), ipv4(saddr=10.0.1.2, daddr=203.0.113.2, ttl=64), udp(sp=dinc(1000, 1063, 1), dp=9), fill(0x00, 18) }\n' \
    "$gw" "$src" > "$DIR/udp64.trafgen"
  packets=$((SECS * 250000))
  r1=$(ip netns exec "$P-ext" cat /sys/class/net/eth0/statistics/rx_packets)
  t1=$(date +%s.%N)
  ip netns exec "$P-pod1" taskset -c 0 trafgen --dev eth0 --conf "$DIR/udp64.trafgen" --cpus 1 \
     --num "$packets" -q >/dev/null 2>&1
  t2=$(date +%s.%N)
  sleep 0.3
  r2=$(ip netns exec "$P-ext" cat /sys/class/net/eth0/statistics/rx_packets)
  python3 -c "d=$r2-$r1; t=$t2-$t1; n=$packets; print(int(d/t), int(n/t))"
}
conns() { ip netns exec "$P-ext" taskset -c 0 python3 "$DIR/client.py" "$SECS"; }

declare -a K_ST V_ST K_SU V_SU K_DT V_DT K_DC V_DC
measure() { # label
  local st su dt dc
  st=$(iperf "$P-pod1" "$P-ext" 203.0.113.2)
  su=($(udp))
  dt=$(iperf "$P-ext" "$P-pod1" 10.96.0.10)
  dc=$(conns)
  echo "$1: SNAT TCP $((st/1000000)) Mbit/s, SNAT UDP 64B delivered ${su[0]} pps (offered ${su[1]}), DNAT TCP $((dt/1000000)) Mbit/s, DNAT new connections ${dc}/s" >&2
  echo "$st ${su[0]} $dt $dc"
}
for round in $(seq "$ROUNDS"); do
  kernel_on; warm
  r=($(measure "round $round kernel "))
  K_ST+=("${r[0]}"); K_SU+=("${r[1]}"); K_DT+=("${r[2]}"); K_DC+=("${r[3]}")
  kernel_off
  vrouter_on; warm
  r=($(measure "round $round vrouter"))
  V_ST+=("${r[0]}"); V_SU+=("${r[1]}"); V_DT+=("${r[2]}"); V_DC+=("${r[3]}")
  # Where the vrouter dropped (the UDP flood's losses are mostly xsk-kernel-rx-dropped).
  "$BIN/vrouterctl" --socket "$DIR/control.sock" drops | awk 'NR > 1 {printf "  %s %s", $1, $2} END {print ""}' >&2
  stop_vrouter
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
row() { # label kernel vrouter scale
  awk -v l="$1" -v k="$2" -v v="$3" -v s="$4" 'BEGIN {printf "| %s | %.0f | %.0f | %.2f |\n", l, k/s, v/s, v/k}'
}
echo
echo "| metric (median of $ROUNDS rounds, ${SECS} s each) | kernel nftables | vrouter | vrouter / kernel |"
echo "|---|---|---|---|"
row "masquerade: iperf3 TCP pod -> external, Mbit/s" "$(median "${K_ST[@]}")" "$(median "${V_ST[@]}")" 1e6
row "masquerade: UDP 64 B delivered, pps" "$(median "${K_SU[@]}")" "$(median "${V_SU[@]}")" 1
row "DNAT: iperf3 TCP external -> VIP, Mbit/s" "$(median "${K_DT[@]}")" "$(median "${V_DT[@]}")" 1e6
row "DNAT: new TCP connections/s (one sequential client)" "$(median "${K_DC[@]}")" "$(median "${V_DC[@]}")" 1
