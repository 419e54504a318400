#!/usr/bin/env bash
# ACLs through the vrouter vs the kernel's nftables, same rule count, same topology, same run.
#
#   pod1 (10.0.1.2) -- vp1 [node] vp2 -- pod2 (10.0.2.2)
#
# The policy admits, towards pod2, TCP and UDP from N single peers on one port each (pod1
# among them, on 5201 and 9), and denies the rest. Kernel rounds: ip_forward, an nftables
# forward chain "ct state established,related accept", then the N rules (one per peer, as
# kube-proxy-era iptables/nftables policies are written), then drop. vrouter rounds: the same
# rules as an [[acl]] on vp2 out. For each N (10 and 10,000), rounds alternate; the vrouter
# worker is pinned to CPU 1, generators to CPU 0.
#
# Measures: iperf3 TCP pod1 -> pod2 (established traffic); UDP 64 B from trafgen with 64 flows
# delivered at pod2 (each flow's first packet classified); new TCP connections per second from
# one sequential client (every connection's first packet classified).
# Usage: scripts/bench-acl.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 5 s)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
SECS="${2:-5}"
source scripts/setup.sh >/dev/null
cargo build --release --bins --locked -q
BIN="$PWD/target/release"
P="vba$$"
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
  for ns in node pod1 pod2; do ip netns del "$P-$ns" 2>/dev/null; done
  rm -rf "$DIR"
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

# The N peers: 10.1.x.y, 3 apart, pod1 in the middle; ports 8000-8049, pod1's 5201 (TCP),
# 9 (UDP) and 8080 (TCP).
write_policies() { # N
  python3 - "$1" "$DIR" <<'PY'
import ipaddress, sys
n, d = int(sys.argv[1]), sys.argv[2]
peers = []
for i in range(n):
    if i == n // 2:
        peers.append(("10.0.1.2", [("tcp", 5201), ("udp", 9), ("tcp", 8080)]))
    else:
        peers.append((str(ipaddress.IPv4Address(0x0a010000 + 3 * i)), [("tcp", 8000 + i % 50)]))
with open(f"{d}/vrouter-{n}.toml", "w") as f:
    f.write('[[port]]\nname = "vp1"\naddresses = ["10.0.1.1/24"]\n')
    f.write('[[port]]\nname = "vp2"\naddresses = ["10.0.2.1/24"]\n')
    f.write('[[acl]]\nport = "vp2"\ndirection = "out"\n')
    for peer, rules in peers:
        for proto, port in rules:
            f.write(f'[[acl.rule]]\nsrc = "{peer}/32"\nprotocol = "{proto}"\ndst_ports = "{port}"\naction = "allow"\n')
with open(f"{d}/nft-{n}.nft", "w") as f:
    f.write("table ip benchacl {\n chain forward {\n  type filter hook forward priority filter; policy accept;\n")
    f.write('  oifname != "vp2" accept\n  ct state established,related accept\n')
    for peer, rules in peers:
        for proto, port in rules:
            f.write(f"  ip saddr {peer} {proto} dport {port} accept\n")
    f.write("  drop\n }\n}\n")
PY
}
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
    c = socket.create_connection(("10.0.2.2", 8080), timeout=2)
    if c.recv(8) == b"ok\n": n += 1
    c.close()
print(int(n / (time.time() - start)))
PY
ip netns exec "$P-pod2" taskset -c 0 python3 "$DIR/server.py" & PIDS+=($!)

kernel_on() { # N
  ip -n "$P-node" addr add 10.0.1.1/24 dev vp1
  ip -n "$P-node" addr add 10.0.2.1/24 dev vp2
  ip netns exec "$P-node" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$P-node" nft -f "$DIR/nft-$1.nft"
}
kernel_off() {
  ip netns exec "$P-node" nft delete table ip benchacl
  ip netns exec "$P-node" sysctl -qw net.ipv4.ip_forward=0
  ip -n "$P-node" addr flush dev vp1
  ip -n "$P-node" addr flush dev vp2
}
vrouter_on() { # N
  rm -rf "$DIR/state"
  ip netns exec "$P-node" "$BIN/vrouter" --socket "$DIR/vrouter.sock" --cores 1 --idle adaptive \
     --log-level warn & VR_PIDS+=($!)
  for _ in $(seq 100); do [ -S "$DIR/vrouter.sock" ] && break; sleep 0.05; done
  ip netns exec "$P-node" "$BIN/vrouter-control" --vrouter-socket "$DIR/vrouter.sock" \
     --listen "$DIR/control.sock" --state-dir "$DIR/state" --config "$DIR/vrouter-$1.toml" \
     --log-level warn & VR_PIDS+=($!)
  for _ in $(seq 200); do
    ip netns exec "$P-pod1" python3 -c "import socket; socket.create_connection(('10.0.2.2', 8080), timeout=0.3).close()" \
      >/dev/null 2>&1 && break; sleep 0.1
  done
}
iperf() {
  ip netns exec "$P-pod2" taskset -c 0 iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  local server=$!; sleep 0.3
  ip netns exec "$P-pod1" taskset -c 0 iperf3 -c 10.0.2.2 -p 5201 -t "$SECS" -J \
    | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))'
  wait "$server" 2>/dev/null || true
}
udp() { # delivered pps
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
  python3 -c "print(int(($r2-$r1)/($t2-$t1)))"
}
conns() { ip netns exec "$P-pod1" taskset -c 0 python3 "$DIR/client.py" "$SECS"; }

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
row() { awk -v l="$1" -v k="$2" -v v="$3" -v s="$4" 'BEGIN {printf "| %s | %.0f | %.0f | %.2f |\n", l, k/s, v/s, v/k}'; }
TABLE=()
for N in 10 10000; do
  write_policies "$N"
  K_T=(); V_T=(); K_U=(); V_U=(); K_C=(); V_C=()
  for round in $(seq "$ROUNDS"); do
    kernel_on "$N"
    t=$(iperf); u=$(udp); c=$(conns)
    K_T+=("$t"); K_U+=("$u"); K_C+=("$c")
    echo "N=$N round $round kernel : TCP $((t/1000000)) Mbit/s, UDP 64B delivered $u pps, new connections $c/s" >&2
    kernel_off
    vrouter_on "$N"
    t=$(iperf); u=$(udp); c=$(conns)
    V_T+=("$t"); V_U+=("$u"); V_C+=("$c")
    echo "N=$N round $round vrouter: TCP $((t/1000000)) Mbit/s, UDP 64B delivered $u pps, new connections $c/s" >&2
    stop_vrouter
  done
  TABLE+=("$(row "$N rules: iperf3 TCP, Mbit/s" "$(median "${K_T[@]}")" "$(median "${V_T[@]}")" 1e6)")
  TABLE+=("$(row "$N rules: UDP 64 B delivered (trafgen, 64 flows), pps" "$(median "${K_U[@]}")" "$(median "${V_U[@]}")" 1)")
  TABLE+=("$(row "$N rules: new TCP connections/s (one sequential client)" "$(median "${K_C[@]}")" "$(median "${V_C[@]}")" 1)")
done
echo
echo "| metric (median of $ROUNDS rounds, ${SECS} s each) | kernel nftables | vrouter | vrouter / kernel |"
echo "|---|---|---|---|"
printf '%s\n' "${TABLE[@]}"
