#!/usr/bin/env bash
# The demo lab: a node namespace running the real vrouter and vrouter-control on the built-in
# demo configuration, two pod namespaces behind it, and real traffic (ping, traceroute,
# iperf3) through it, with the operator's view (vrouterctl) along the way. Everything it
# creates is removed on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo build --release --bins --locked
BIN="$PWD/target/release"
P="vdemo$$"
DIR="$(mktemp -d /tmp/vrouter-demo.XXXXXX)"
PIDS=()

cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  for ns in node pod1 pod2; do ip netns del "$P-$ns" 2>/dev/null; done
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ctl() { "$BIN/vrouterctl" --socket "$DIR/control.sock" "$@"; }

say "topology: pod1 (10.0.1.2) -- vp1 [vrouter in $P-node] vp2 -- pod2 (10.0.2.2)"
for ns in node pod1 pod2; do ip netns add "$P-$ns"; ip -n "$P-$ns" link set lo up; done
for i in 1 2; do
  ip link add "vp$i" netns "$P-node" numrxqueues 1 numtxqueues 1 type veth \
     peer eth0 netns "$P-pod$i" numrxqueues 1 numtxqueues 1
  ip -n "$P-node" link set "vp$i" up
  ip -n "$P-pod$i" addr add "10.0.$i.2/24" dev eth0
  ip -n "$P-pod$i" addr add "fd00:$i::2/64" dev eth0 nodad
  ip -n "$P-pod$i" link set eth0 up
  ip -n "$P-pod$i" route add default via "10.0.$i.1"
  ip -n "$P-pod$i" -6 route add default via "fd00:$i::1"
done

cat > "$DIR/vrouter.toml" <<'TOML'
# The demo's configuration: two pod ports, a blackholed range.
[[port]]
name = "vp1"
addresses = ["10.0.1.1/24", "fd00:1::1/64"]

[[port]]
name = "vp2"
addresses = ["10.0.2.1/24", "fd00:2::1/64"]

[[route]]
prefix = "10.66.0.0/16"
blackhole = true
TOML

say "starting vrouter (worker on CPU 1, adaptive idle) and vrouter-control"
ip netns exec "$P-node" "$BIN/vrouter" --socket "$DIR/vrouter.sock" --cores 1 --idle adaptive \
   --log-level warn & PIDS+=($!)
for _ in $(seq 50); do [ -S "$DIR/vrouter.sock" ] && break; sleep 0.1; done
ip netns exec "$P-node" "$BIN/vrouter-control" --vrouter-socket "$DIR/vrouter.sock" \
   --listen "$DIR/control.sock" --state-dir "$DIR/state" --config "$DIR/vrouter.toml" \
   --log-level warn & PIDS+=($!)
for _ in $(seq 50); do ctl status >/dev/null 2>&1 && break; sleep 0.1; done
sleep 1

say "vrouterctl port list"; ctl port list
say "vrouterctl route list"; ctl route list
say "ping pod1 -> pod2 (the vrouter answers ARP and resolves pod2 itself)"
ip netns exec "$P-pod1" ping -c 3 -i 0.2 10.0.2.2
say "ping over IPv6"; ip netns exec "$P-pod1" ping -c 3 -i 0.2 fd00:2::2
say "traceroute pod1 -> pod2 (TTL decremented, ICMP time exceeded from the router)"
ip netns exec "$P-pod1" traceroute -n -q 1 -w 1 -m 4 10.0.2.2
say "a blackholed destination"; ip netns exec "$P-pod1" ping -c 2 -W 1 10.66.0.1 || true
say "iperf3 TCP pod1 -> pod2, 3 s"
ip netns exec "$P-pod2" iperf3 -s -1 -p 5201 >/dev/null & PIDS+=($!)
sleep 0.5
ip netns exec "$P-pod1" taskset -c 0 iperf3 -c 10.0.2.2 -p 5201 -t 3 | tail -4
say "vrouterctl neigh list"; ctl neigh list
say "vrouterctl stats"; ctl stats
say "vrouterctl drops"; ctl drops
say "demo finished; cleaning up"
