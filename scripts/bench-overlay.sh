#!/usr/bin/env bash
# Pod-to-pod across a VXLAN overlay (VNI 100, UDP 4789): our vrouters vs the kernel's vxlan
# datapath (flannel-style), same topology, same run.
#
#   pod1 (10.244.1.2) -- vp1 [node1] eth0 --- br0 [underlay] --- eth0 [node2] vp2 -- pod2 (10.244.2.2)
#                                192.168.100.1                   192.168.100.2      (VTEPs)
#
# Pods have MTU 1450 (as flannel sets them), the underlay 1500.
# Kernel rounds: each node is plain Linux as flannel's VXLAN backend sets it up: flannel.1
#   (vxlan id 100, dstport 4789, nolearning, mtu 1450, 10.244.N.0/32), routes
#   `10.244.M.0/24 via 10.244.M.0 dev flannel.1 onlink`, a permanent neighbor and an fdb entry
#   for the peer; pods are routed by the kernel (ip_forward=1, 10.244.N.1/24 on vpN).
# vrouter rounds: no kernel addresses, no flannel.1; each node runs vrouter (worker pinned to
#   CPU 1, adaptive idle) and vrouter-control, configured with vrouterctl: eth0 in VRF 0 with
#   the VTEP address, vpN in VRF 1, `vxlan add 100 vrf 1 local VTEP dev eth0`, a route to the
#   other node's pod subnet `vxlan 100 remote VTEP`.
# Rounds alternate (kernel, vrouter, kernel, vrouter, ...). Generators (iperf3 client and
# server, trafgen) are pinned to CPU 0. Both vrouters share CPU 1 (the machine has 2 vCPUs).
#
# Measurements per round:
#   - iperf3 TCP pod1 -> pod2, Mbit/s (receiver side);
#   - UDP 64-byte frames at fixed rates (FIXED_RATES pps, default "50000 100000"): iperf3 -u
#     with 18-byte datagrams, one flow; sent and delivered datagrams/s and loss as iperf3's
#     server counts them;
#   - UDP 64-byte frames as fast as trafgen can send them (18-byte payload, 64 flows by source
#     port) from pod1's interface; delivered = frames received on pod2's interface per second.
# Prints one line per measurement and a markdown table of medians with the vrouter/kernel ratio.
#
# Usage: scripts/bench-overlay.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 5 s)
#   env: FIXED_RATES (default "50000 100000"), CARGO_TARGET_DIR (binaries in $CARGO_TARGET_DIR/release),
#        MODES (default "kernel vrouter"; "kernel" alone checks the topology without building),
#        DIAG=1 (after each vrouter measurement, print both vrouters' non-zero drop counters)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
SECS="${2:-5}"
FIXED_RATES="${FIXED_RATES:-50000 100000}"
MODES="${MODES:-kernel vrouter}"
source scripts/setup.sh >/dev/null
case " $MODES " in *" vrouter "*) cargo build --release --bins --locked -q ;; esac
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
case "$TARGET" in /*) ;; *) TARGET="$PWD/$TARGET" ;; esac
BIN="$TARGET/release"
P="vbo$$"
NSS=(ul node1 node2 pod1 pod2)
DIR="$(mktemp -d /tmp/vrouter-bench-overlay.XXXXXX)"
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
ip -n "$P-ul" link add br0 type bridge
ip -n "$P-ul" link set br0 up
for i in 1 2; do
  ip link add eth0 netns "$P-node$i" numrxqueues 1 numtxqueues 1 type veth \
     peer "n$i" netns "$P-ul" numrxqueues 1 numtxqueues 1
  ip -n "$P-ul" link set "n$i" master br0 up
  ip -n "$P-node$i" link set eth0 up
  ip link add "vp$i" netns "$P-node$i" numrxqueues 1 numtxqueues 1 type veth \
     peer eth0 netns "$P-pod$i" numrxqueues 1 numtxqueues 1
  ip -n "$P-node$i" link set "vp$i" mtu 1450 up
  ip -n "$P-pod$i" link set eth0 mtu 1450 up
  ip -n "$P-pod$i" addr add "10.244.$i.2/24" dev eth0
  ip -n "$P-pod$i" route add default via "10.244.$i.1"
done
other() { echo $((3 - $1)); }

kernel_on() {
  local i j mac
  for i in 1 2; do
    ip -n "$P-node$i" addr add "192.168.100.$i/24" dev eth0
    ip -n "$P-node$i" addr add "10.244.$i.1/24" dev "vp$i"
    ip -n "$P-node$i" link add flannel.1 type vxlan id 100 local "192.168.100.$i" dev eth0 \
       dstport 4789 nolearning
    ip -n "$P-node$i" link set flannel.1 mtu 1450 up
    ip -n "$P-node$i" addr add "10.244.$i.0/32" dev flannel.1
    ip netns exec "$P-node$i" sysctl -qw net.ipv4.ip_forward=1
  done
  for i in 1 2; do
    j=$(other "$i")
    mac=$(ip netns exec "$P-node$j" cat /sys/class/net/flannel.1/address)
    ip -n "$P-node$i" route add "10.244.$j.0/24" via "10.244.$j.0" dev flannel.1 onlink
    ip -n "$P-node$i" neigh replace "10.244.$j.0" lladdr "$mac" dev flannel.1 nud permanent
    bridge -n "$P-node$i" fdb append "$mac" dst "192.168.100.$j" dev flannel.1
  done
}
kernel_off() {
  local i
  for i in 1 2; do
    ip netns exec "$P-node$i" sysctl -qw net.ipv4.ip_forward=0
    ip -n "$P-node$i" link del flannel.1
    ip -n "$P-node$i" addr flush dev eth0
    ip -n "$P-node$i" addr flush dev "vp$i"
    ip -n "$P-node$i" neigh flush all
  done
}
ctl() { local i=$1; shift; "$BIN/vrouterctl" --socket "$DIR/control$i.sock" "$@" >/dev/null; }
vrouter_on() {
  local i j
  for i in 1 2; do
    rm -rf "$DIR/state$i" "$DIR/vrouter$i.sock" "$DIR/control$i.sock"
    ip netns exec "$P-node$i" "$BIN/vrouter" --socket "$DIR/vrouter$i.sock" --cores 1 \
       --idle adaptive --log-level warn & VR_PIDS+=($!)
    for _ in $(seq 100); do [ -S "$DIR/vrouter$i.sock" ] && break; sleep 0.05; done
    ip netns exec "$P-node$i" "$BIN/vrouter-control" --vrouter-socket "$DIR/vrouter$i.sock" \
       --listen "$DIR/control$i.sock" --state-dir "$DIR/state$i" --log-level warn & VR_PIDS+=($!)
    for _ in $(seq 100); do [ -S "$DIR/control$i.sock" ] && break; sleep 0.05; done
  done
  for i in 1 2; do
    j=$(other "$i")
    ctl "$i" port add eth0 addr "192.168.100.$i/24"
    ctl "$i" port add "vp$i" vrf 1 addr "10.244.$i.1/24"
    ctl "$i" vxlan add 100 vrf 1 local "192.168.100.$i" dev eth0
    ctl "$i" route add "10.244.$j.0/24" vxlan 100 remote "192.168.100.$j" vrf 1
  done
}

# Both datapaths must pass traffic before anything is measured.
warm() {
  for _ in $(seq 50); do
    ip netns exec "$P-pod1" ping -c 1 -W 0.2 10.244.2.2 >/dev/null 2>&1 && break; sleep 0.1
  done
  if ! ip netns exec "$P-pod1" ping -c 2 -i 0.2 -W 1 10.244.2.2 >/dev/null; then
    echo "no connectivity pod1 -> pod2 across the overlay" >&2
    exit 1
  fi
}

tcp() {
  ip netns exec "$P-pod2" taskset -c 0 iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  local server=$!; sleep 0.3
  local bps
  bps=$(ip netns exec "$P-pod1" taskset -c 0 iperf3 -c 10.244.2.2 -p 5201 -t "$SECS" -J \
        | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))')
  wait "$server" 2>/dev/null || true
  echo "$bps"
}
# Fixed rate: iperf3 UDP with 18-byte datagrams (64-byte frames) at RATE pps, client and
# server on CPU 0, one flow, iperf3's own pacing (1 ms timer). Delivered = datagrams the
# server received (so drops in pod2's socket count too; both datapaths alike).
# Prints: delivered_pps offered_pps loss%.
udp_fixed() {
  local rate=$1
  ip netns exec "$P-pod2" taskset -c 0 iperf3 -s -1 -p 5202 >/dev/null 2>&1 &
  local server=$!; sleep 0.3
  ip netns exec "$P-pod1" taskset -c 0 iperf3 -c 10.244.2.2 -p 5202 -u -l 18 \
     -b $((rate * 18 * 8)) -t "$SECS" -J \
    | python3 -c 'import json,sys
s = json.load(sys.stdin)["end"]["sum"]
sent, lost, t = s["packets"], s["lost_packets"], s["seconds"]
print(int((sent - lost) / t), int(sent / t), round(100.0 * lost / max(sent, 1), 2))'
  wait "$server" 2>/dev/null || true
}
# Max rate: 64-byte frames (18-byte UDP payload, 64 flows by source port) from trafgen pinned
# to CPU 0, as fast as it can send; delivered = frames received on pod2's interface per second
# of sending. (Not trafgen's --rate for fixed rates: it sends each second's packets in one
# burst at full speed, then sleeps.) Prints: delivered_pps offered_pps loss%.
udp_max() {
  local gw src packets r1 r2 t1 t2
  gw=$(ip netns exec "$P-node1" cat /sys/class/net/vp1/address)
  src=$(ip netns exec "$P-pod1" cat /sys/class/net/eth0/address)
  printf '{ eth(da=%s, sa=%s), ipv4(saddr=10.244.1.2, daddr=10.244.2.2, ttl=64), udp(sp=dinc(1000, 1063, 1), dp=9), fill(0x00, 18) }\n' \
    "$gw" "$src" > "$DIR/udp64.trafgen"
  packets=$((SECS * 250000))
  r1=$(ip netns exec "$P-pod2" cat /sys/class/net/eth0/statistics/rx_packets)
  t1=$(date +%s.%N)
  ip netns exec "$P-pod1" taskset -c 0 timeout $((SECS * 4 + 10)) trafgen --dev eth0 \
     --conf "$DIR/udp64.trafgen" --cpus 1 -q --num "$packets" >/dev/null 2>&1 || true
  t2=$(date +%s.%N)
  sleep 0.3
  r2=$(ip netns exec "$P-pod2" cat /sys/class/net/eth0/statistics/rx_packets)
  python3 -c "d=$r2-$r1; t=$t2-$t1; n=$packets; print(int(d/t), int(n/t), max(0.0, round(100.0*(n-d)/n, 2)))"
}

# Non-zero drop counters of both vrouters (cumulative since vrouter_on), with DIAG=1.
diag() {
  [ "${DIAG:-0}" = 1 ] && [ "$1" = vrouter ] || return 0
  local i
  for i in 1 2; do
    echo "    node$i after $2: $("$BIN/vrouterctl" --socket "$DIR/control$i.sock" -j drops all \
      | python3 -c 'import json,sys; print(" ".join("%s=%d" % (d["reason"], d["count"]) for d in json.load(sys.stdin)["drops"] if d["count"]))')" >&2
  done
}
# Results: R[mode:metric] holds one value per round.
declare -A R
add() { R[$1:$2]+="$3 "; }
measure() { # mode round
  local mode=$1 t u rate line
  t=$(tcp); diag "$mode" TCP; add "$mode" tcp "$t"
  line="round $2 $(printf '%-7s' "$mode") TCP $((t / 1000000)) Mbit/s"
  for rate in $FIXED_RATES; do
    u=($(udp_fixed "$rate")); diag "$mode" "UDP at $rate pps"
    add "$mode" "fix$rate" "${u[0]}"; add "$mode" "fixoff$rate" "${u[1]}"; add "$mode" "fixloss$rate" "${u[2]}"
    line+="; UDP at $rate pps: sent ${u[1]}, delivered ${u[0]} pps (loss ${u[2]}%)"
  done
  u=($(udp_max)); diag "$mode" "UDP max rate"
  add "$mode" max "${u[0]}"; add "$mode" maxoff "${u[1]}"; add "$mode" maxloss "${u[2]}"
  line+="; max rate: offered ${u[1]}, delivered ${u[0]} pps (loss ${u[2]}%)"
  echo "$line"
}

for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    case "$mode" in
      kernel) kernel_on; warm; measure kernel "$round"; kernel_off ;;
      vrouter) vrouter_on; warm; measure vrouter "$round"; stop_vrouter ;;
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
echo "| metric (median of $ROUNDS rounds, ${SECS} s each) | kernel vxlan (flannel-style) | vrouter | vrouter / kernel |"
echo "|---|---|---|---|"
row "iperf3 TCP pod to pod, Mbit/s" tcp 1e6 "%.0f"
for rate in $FIXED_RATES; do
  row "UDP 64 B at $rate pps (iperf3), sent pps" "fixoff$rate" 1 "%d" noratio
  row "UDP 64 B at $rate pps (iperf3), delivered pps" "fix$rate" 1 "%d"
  row "UDP 64 B at $rate pps (iperf3), loss %" "fixloss$rate" 1 "%.2f" noratio
done
row "UDP 64 B max rate (trafgen), offered pps" maxoff 1 "%d" noratio
row "UDP 64 B max rate (trafgen), delivered pps" max 1 "%d"
row "UDP 64 B max rate (trafgen), loss %" maxloss 1 "%.2f" noratio
