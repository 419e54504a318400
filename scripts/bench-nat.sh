#!/usr/bin/env bash
# NAT through the vrouter vs the kernel (nftables masquerade and DNAT with conntrack, as
# kube-proxy's nftables mode does), same topology, same run.
#
#   pod1 (10.0.1.2) -- vp1 [node] ve0 (203.0.113.1) -- eth0 (203.0.113.2) ext
#
# ext has no route to 10.0.0.0/16: pod traffic only comes back if masqueraded. ext reaches the
# Service VIP 10.96.0.10 through the node (port 5201: iperf3 in pod1; port 80: a
# short-connection server on pod1's port 8080).
# Kernel rounds: node addresses on vp1/ve0, ip_forward=1, nftables: masquerade of 10.0.0.0/16
#   out of ve0 and DNAT of the VIP (conntrack), as kube-proxy's nftables mode installs them
#   minus its chains.
# vrouter rounds: the same as [[snat]] and [[service]]s, no kernel addresses on the node;
#   `vrouter --cores 1 --idle adaptive` (its worker pinned to CPU 1).
# Rounds alternate (kernel, vrouter, kernel, ...). Generators, clients and servers are pinned
# to CPU 0. The kernel does its forwarding and NAT in the sender's softirq, i.e. on CPU 0 too.
#
# Measurements per round:
#   - masquerade: iperf3 TCP pod1 -> ext, Mbit/s (receiver side);
#   - masquerade: UDP 64-byte frames at fixed rates (FIXED_RATES pps, default "50000 100000"):
#     iperf3 -u with 18-byte datagrams, one flow; sent and delivered datagrams/s, loss, as
#     iperf3's server counts them;
#   - masquerade: UDP 64-byte frames as fast as trafgen sends them, FLOWS flows (source ports,
#     default 1024: as many connections in the table); delivered = frames reaching ext's input
#     with the node's address as source (an nftables counter in ext, which then drops them:
#     no ICMP answers), per second of sending;
#   - DNAT: iperf3 TCP ext -> VIP:5201, Mbit/s;
#   - DNAT: new TCP connections per second ext -> VIP:80 from one sequential Python client
#     (connect, read a line, close): connection setup, NAT and teardown per connection.
# Prints one line per round and a markdown table of medians with the vrouter/kernel ratio.
#
# Usage: scripts/bench-nat.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 5 s)
#   env: FIXED_RATES (default "50000 100000"), FLOWS (default 1024),
#        CARGO_TARGET_DIR (binaries in $CARGO_TARGET_DIR/release),
#        MODES (default "kernel vrouter"; "kernel" alone checks the topology without building),
#        DIAG=1 (after each vrouter round, its non-zero drop counters and conntrack counters)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
SECS="${2:-5}"
FIXED_RATES="${FIXED_RATES:-50000 100000}"
FLOWS="${FLOWS:-1024}"
MODES="${MODES:-kernel vrouter}"
source scripts/setup.sh >/dev/null
case " $MODES " in *" vrouter "*) cargo build --release --bins --locked -q ;; esac
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
case "$TARGET" in /*) ;; *) TARGET="$PWD/$TARGET" ;; esac
BIN="$TARGET/release"
P="vbn$$"
NSS=(node pod1 ext)
DIR="$(mktemp -d /tmp/vrouter-bench-nat.XXXXXX)"
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
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  # Anything still running inside our namespaces was started by this script.
  for ns in "${NSS[@]}"; do
    for pid in $(ip netns pids "$P-$ns" 2>/dev/null); do kill "$pid" 2>/dev/null; done
  done
  sleep 0.2
  for ns in "${NSS[@]}"; do ip netns del "$P-$ns" 2>/dev/null; done
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

for ns in "${NSS[@]}"; do ip netns add "$P-$ns"; ip -n "$P-$ns" link set lo up; done
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
# ext counts the flood's frames by source (translated or not) and drops them.
ip netns exec "$P-ext" nft -f - <<'NFT'
table ip sink {
  counter natted { }
  counter other { }
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 9 ip saddr 203.0.113.1 counter name "natted" drop
    udp dport 9 counter name "other" drop
  }
}
NFT

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
  ip -n "$P-node" neigh flush all
}
vrouter_on() {
  rm -rf "$DIR/state" "$DIR/vrouter.sock" "$DIR/control.sock"
  ip netns exec "$P-node" "$BIN/vrouter" --socket "$DIR/vrouter.sock" --cores 1 --idle adaptive \
     --log-level warn & VR_PIDS+=($!)
  for _ in $(seq 100); do [ -S "$DIR/vrouter.sock" ] && break; sleep 0.05; done
  ip netns exec "$P-node" "$BIN/vrouter-control" --vrouter-socket "$DIR/vrouter.sock" \
     --listen "$DIR/control.sock" --state-dir "$DIR/state" --config "$DIR/vrouter.toml" \
     --log-level warn & VR_PIDS+=($!)
  for _ in $(seq 100); do [ -S "$DIR/control.sock" ] && break; sleep 0.05; done
}
# Both datapaths must pass traffic (masquerade and Service) before anything is measured.
warm() {
  for _ in $(seq 50); do
    ip netns exec "$P-pod1" ping -c 1 -W 0.2 203.0.113.2 >/dev/null 2>&1 && break; sleep 0.1
  done
  if ! ip netns exec "$P-pod1" ping -c 2 -i 0.2 -W 1 203.0.113.2 >/dev/null; then
    echo "no connectivity pod1 -> ext through the masquerade ($1)" >&2
    exit 1
  fi
  if ! ip netns exec "$P-ext" python3 -c '
import socket; c = socket.create_connection(("10.96.0.10", 80), timeout=2); assert c.recv(8) == b"ok\n"'
  then
    echo "no connection ext -> 10.96.0.10:80 through the Service ($1)" >&2
    exit 1
  fi
}

tcp() { # client-ns server-ns target: prints bit/s
  ip netns exec "$2" taskset -c 0 iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  local server=$!; sleep 0.3
  ip netns exec "$1" taskset -c 0 iperf3 -c "$3" -p 5201 -t "$SECS" -J \
    | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))'
  wait "$server" 2>/dev/null || true
}
# Fixed rate: iperf3 UDP with 18-byte datagrams (64-byte frames) at RATE pps, pod1 -> ext
# through the masquerade, one flow, iperf3's own pacing. Delivered = datagrams the server
# received. Prints: delivered_pps offered_pps loss%.
udp_fixed() {
  local rate=$1
  ip netns exec "$P-ext" taskset -c 0 iperf3 -s -1 -p 5202 >/dev/null 2>&1 &
  local server=$!; sleep 0.3
  ip netns exec "$P-pod1" taskset -c 0 iperf3 -c 203.0.113.2 -p 5202 -u -l 18 \
     -b $((rate * 18 * 8)) -t "$SECS" -J \
    | python3 -c 'import json,sys
s = json.load(sys.stdin)["end"]["sum"]
sent, lost, t = s["packets"], s["lost_packets"], s["seconds"]
print(int((sent - lost) / t), int(sent / t), round(100.0 * lost / max(sent, 1), 2))'
  wait "$server" 2>/dev/null || true
}
counter() { # name: packets of ext's sink counter
  ip netns exec "$P-ext" nft -j list counter ip sink "$1" \
    | python3 -c 'import json,sys; print([o["counter"]["packets"] for o in json.load(sys.stdin)["nftables"] if "counter" in o][0])'
}
# Max rate: 64-byte frames (18-byte UDP payload, FLOWS flows by source port) from trafgen
# pinned to CPU 0, as fast as it sends; delivered = translated frames reaching ext's input per
# second of sending. Prints: delivered_pps offered_pps loss% untranslated_frames.
udp_max() {
  local gw src packets n1 n2 o1 o2 t1 t2
  gw=$(ip netns exec "$P-node" cat /sys/class/net/vp1/address)
  src=$(ip netns exec "$P-pod1" cat /sys/class/net/eth0/address)
  printf '{ eth(da=%s, sa=%s), ipv4(saddr=10.0.1.2, daddr=203.0.113.2, ttl=64), udp(sp=dinc(10000, %d, 1), dp=9), fill(0x00, 18) }\n' \
    "$gw" "$src" $((10000 + FLOWS - 1)) > "$DIR/udp64.trafgen"
  packets=$((SECS * 250000))
  n1=$(counter natted); o1=$(counter other)
  t1=$(date +%s.%N)
  ip netns exec "$P-pod1" taskset -c 0 timeout $((SECS * 4 + 10)) trafgen --dev eth0 \
     --conf "$DIR/udp64.trafgen" --cpus 1 -q --num "$packets" >/dev/null 2>&1 || true
  t2=$(date +%s.%N)
  sleep 0.3
  n2=$(counter natted); o2=$(counter other)
  python3 -c "d=$n2-$n1; t=$t2-$t1; n=$packets; print(int(d/t), int(n/t), max(0.0, round(100.0*(n-d)/n, 2)), $o2-$o1)"
}
conns() { ip netns exec "$P-ext" taskset -c 0 python3 "$DIR/client.py" "$SECS"; }

diag() {
  [ "${DIAG:-0}" = 1 ] || return 0
  echo "    vrouter drops: $("$BIN/vrouterctl" --socket "$DIR/control.sock" -j drops all \
    | python3 -c 'import json,sys; print(" ".join("%s=%d" % (d["reason"], d["count"]) for d in json.load(sys.stdin)["drops"] if d["count"]))')" >&2
  echo "    vrouter conntrack: $("$BIN/vrouterctl" --socket "$DIR/control.sock" -j conntrack stats \
    | python3 -c 'import json,sys; c = json.load(sys.stdin)["conntrack"]["counters"]; print(" ".join("%s=%d" % kv for kv in c.items() if kv[1]))')" >&2
}
# Results: R[mode:metric] holds one value per round.
declare -A R
add() { R[$1:$2]+="$3 "; }
measure() { # mode round
  local mode=$1 st dt dc u rate line
  st=$(tcp "$P-pod1" "$P-ext" 203.0.113.2); add "$mode" snat_tcp "$st"
  line="round $2 $(printf '%-7s' "$mode") SNAT TCP $((st / 1000000)) Mbit/s"
  for rate in $FIXED_RATES; do
    u=($(udp_fixed "$rate"))
    add "$mode" "fix$rate" "${u[0]}"; add "$mode" "fixoff$rate" "${u[1]}"; add "$mode" "fixloss$rate" "${u[2]}"
    line+="; UDP at $rate pps: sent ${u[1]}, delivered ${u[0]} (loss ${u[2]}%)"
  done
  u=($(udp_max))
  add "$mode" max "${u[0]}"; add "$mode" maxoff "${u[1]}"; add "$mode" maxloss "${u[2]}"
  line+="; max rate $FLOWS flows: offered ${u[1]}, delivered ${u[0]} pps (loss ${u[2]}%)"
  if [ "${u[3]}" != 0 ]; then line+=" UNTRANSLATED ${u[3]}"; fi
  dt=$(tcp "$P-ext" "$P-pod1" 10.96.0.10); add "$mode" dnat_tcp "$dt"
  dc=$(conns); add "$mode" dnat_conns "$dc"
  line+="; DNAT TCP $((dt / 1000000)) Mbit/s; DNAT new connections ${dc}/s"
  echo "$line"
}

for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    case "$mode" in
      kernel) kernel_on; warm kernel; measure kernel "$round"; kernel_off ;;
      vrouter) vrouter_on; warm vrouter; measure vrouter "$round"; diag; stop_vrouter ;;
      *) echo "unknown mode $mode" >&2; exit 1 ;;
    esac
  done
done

median() { (($#)) || return 0; printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
med() { median ${R[$1:$2]:-}; }
row() { # label metric scale format [noratio]; a mode not run prints as "-"
  awk -v l="$1" -v k="$(med kernel "$2")" -v v="$(med vrouter "$2")" -v s="$3" -v f="$4" \
      -v noratio="${5:-}" 'BEGIN {
    ks = (k == "" ? "-" : sprintf(f, k / s)); vs = (v == "" ? "-" : sprintf(f, v / s))
    r = (noratio == "" && k != "" && v != "" && k > 0) ? sprintf("%.2f", v / k) : ""
    printf "| %s | %s | %s | %s |\n", l, ks, vs, r }'
}
echo
echo "| metric (median of $ROUNDS rounds, ${SECS} s each) | kernel nftables | vrouter | vrouter / kernel |"
echo "|---|---|---|---|"
row "masquerade: iperf3 TCP pod -> external, Mbit/s" snat_tcp 1e6 "%.0f"
for rate in $FIXED_RATES; do
  row "masquerade: UDP 64 B at $rate pps (iperf3, 1 flow), sent pps" "fixoff$rate" 1 "%d" noratio
  row "masquerade: UDP 64 B at $rate pps (iperf3, 1 flow), delivered pps" "fix$rate" 1 "%d"
  row "masquerade: UDP 64 B at $rate pps (iperf3, 1 flow), loss %" "fixloss$rate" 1 "%.2f" noratio
done
row "masquerade: UDP 64 B max rate (trafgen, $FLOWS flows), offered pps" maxoff 1 "%d" noratio
row "masquerade: UDP 64 B max rate (trafgen, $FLOWS flows), delivered pps" max 1 "%d"
row "masquerade: UDP 64 B max rate (trafgen, $FLOWS flows), loss %" maxloss 1 "%.2f" noratio
row "DNAT: iperf3 TCP external -> VIP, Mbit/s" dnat_tcp 1e6 "%.0f"
row "DNAT: new TCP connections/s (one sequential Python client)" dnat_conns 1 "%.0f"
