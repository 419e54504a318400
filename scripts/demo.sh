#!/usr/bin/env bash
# The demo lab: a node namespace running the real vrouter and vrouter-control on the built-in
# demo configuration, two pod namespaces behind it, and real traffic (ping, traceroute,
# iperf3) through it, with the operator's view (vrouterctl) along the way. Then the overlay:
# a second node that is plain Linux with a flannel-style VXLAN device and a pod of its own,
# reached through our VXLAN tunnel over an underlay link. Then NAT: pods masqueraded to an
# "external" namespace that has no route back to them, and a Service VIP load-balanced over
# HTTP servers in both pods (one of them reaching itself through it: hairpin). Everything it
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
  for ns in node pod1 pod2 peer pod3 ext; do ip netns del "$P-$ns" 2>/dev/null; done
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ctl() { "$BIN/vrouterctl" --socket "$DIR/control.sock" "$@"; }

say "topology: pod1 (10.0.1.2) -- vp1 [vrouter in $P-node] vp2 -- pod2 (10.0.2.2)"
say "          [vrouter] vu0 (VTEP 192.168.100.1) -- underlay -- eth0 (192.168.100.2) [Linux node $P-peer, flannel.1 VNI 1] -- pod3 (10.0.3.2)"
say "          [vrouter] ve0 (203.0.113.1, masquerade) -- eth0 (203.0.113.2) [external $P-ext, 198.51.100.1, no route to the pods]"
for ns in node pod1 pod2 peer pod3 ext; do ip netns add "$P-$ns"; ip -n "$P-$ns" link set lo up; done
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

# The overlay: an uplink holding our VTEP, VNI 1 (flannel's) in VRF 0, and the peer node's pod
# subnet behind its VTEP; the inner destination MAC is the peer's flannel.1 MAC.
[[port]]
name = "vu0"
addresses = ["192.168.100.1/24"]

[[vxlan]]
vni = 1
local = "192.168.100.1"
dev = "vu0"
mac = "0e:00:00:00:01:01"

[[route]]
prefix = "10.0.3.0/24"
vxlan = 1
remote = "192.168.100.2"
mac = "0e:00:00:00:02:01"

# Leaving the cluster: the external network behind ve0, pods masqueraded to ve0's address.
[[port]]
name = "ve0"
addresses = ["203.0.113.1/24"]

[[route]]
prefix = "198.51.100.0/24"
via = "203.0.113.2"

[[snat]]
source = "10.0.0.0/16"
out = "ve0"

# A Service: a virtual IP spread over HTTP servers in both pods.
[[service]]
vip = "10.96.0.10:80"
protocol = "tcp"
backends = ["10.0.1.2:8080", "10.0.2.2:8080"]
TOML

# The peer node, as flannel's VXLAN backend sets a Linux node up: a vxlan device without
# learning, routes to the other nodes' pod subnets via their flannel address (onlink), and
# static neighbor and FDB entries pointing at our overlay MAC and VTEP.
ip link add vu0 netns "$P-node" numrxqueues 1 numtxqueues 1 type veth \
   peer eth0 netns "$P-peer" numrxqueues 1 numtxqueues 1
ip -n "$P-node" link set vu0 up
ip -n "$P-peer" addr add 192.168.100.2/24 dev eth0
ip -n "$P-peer" link set eth0 up
ip -n "$P-peer" link add flannel.1 address 0e:00:00:00:02:01 type vxlan id 1 \
   local 192.168.100.2 dev eth0 dstport 4789 nolearning
ip -n "$P-peer" link set flannel.1 mtu 1450 up
ip -n "$P-peer" addr add 10.0.3.0/32 dev flannel.1
for i in 1 2; do
  ip -n "$P-peer" route add "10.0.$i.0/24" via 10.0.1.0 dev flannel.1 onlink
done
ip -n "$P-peer" neigh replace 10.0.1.0 lladdr 0e:00:00:00:01:01 dev flannel.1 nud permanent
bridge -n "$P-peer" fdb append 0e:00:00:00:01:01 dev flannel.1 dst 192.168.100.1
ip link add veth3 netns "$P-peer" type veth peer eth0 netns "$P-pod3"
ip -n "$P-peer" addr add 10.0.3.1/24 dev veth3
ip -n "$P-peer" link set veth3 up
ip -n "$P-pod3" addr add 10.0.3.2/24 dev eth0
ip -n "$P-pod3" link set eth0 mtu 1450 up
ip -n "$P-pod3" route add default via 10.0.3.1
ip netns exec "$P-peer" sysctl -qw net.ipv4.ip_forward=1

# The external network: it knows only its own link, so un-translated pod traffic cannot come
# back.
ip link add ve0 netns "$P-node" numrxqueues 1 numtxqueues 1 type veth \
   peer eth0 netns "$P-ext" numrxqueues 1 numtxqueues 1
ip -n "$P-node" link set ve0 up
ip -n "$P-ext" addr add 203.0.113.2/24 dev eth0
ip -n "$P-ext" addr add 198.51.100.1/32 dev lo
ip -n "$P-ext" link set eth0 up

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
say "overlay: ping pod1 -> pod3 behind the Linux node, through our VXLAN tunnel and its flannel.1"
ip netns exec "$P-pod1" ping -c 3 -i 0.2 10.0.3.2
say "path MTU through the overlay: a 1500-byte DF ping gets fragmentation-needed (mtu 1450)"
ip netns exec "$P-pod1" ping -c 1 -W 1 -M do -s 1472 10.0.3.2 || true
ip netns exec "$P-pod1" ping -c 2 -i 0.2 -M do -s 1422 10.0.3.2
say "iperf3 TCP pod3 -> pod1 across the overlay, 3 s"
ip netns exec "$P-pod1" iperf3 -s -1 -p 5202 >/dev/null & PIDS+=($!)
sleep 0.5
ip netns exec "$P-pod3" taskset -c 0 iperf3 -c 10.0.1.2 -p 5202 -t 3 | tail -4
say "vrouterctl vxlan list"; ctl vxlan list

say "NAT: ping pod1 -> 198.51.100.1 (external, no route back to 10.0.0.0/16): masqueraded"
ip netns exec "$P-pod1" ping -c 3 -i 0.2 198.51.100.1
say "traceroute through the masquerade (the ICMP errors are translated back)"
ip netns exec "$P-pod1" traceroute -n -q 1 -w 1 -m 4 198.51.100.1
say "iperf3 TCP pod2 -> external, 3 s: the server sees the node's address"
ip netns exec "$P-ext" iperf3 -s -1 -p 5203 > "$DIR/iperf-ext.log" & PIDS+=($!)
sleep 0.5
ip netns exec "$P-pod2" taskset -c 0 iperf3 -c 198.51.100.1 -p 5203 -t 3 | tail -4
sleep 0.3
grep -m1 "Accepted connection" "$DIR/iperf-ext.log" || true
say "vrouterctl nat snat list"; ctl nat snat list
say "vrouterctl conntrack list"; ctl conntrack list
say "Service 10.96.0.10:80 -> HTTP servers in pod1 and pod2 (6 requests from pod1: pod1's own go through the hairpin)"
for i in 1 2; do
  mkdir -p "$DIR/www$i"; echo "served by pod$i" > "$DIR/www$i/index.html"
  ip netns exec "$P-pod$i" python3 -m http.server 8080 --bind "10.0.$i.2" -d "$DIR/www$i" \
     >/dev/null 2>&1 & PIDS+=($!)
done
sleep 1
for n in 1 2 3 4 5 6; do
  ip netns exec "$P-pod1" python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://10.96.0.10/', timeout=3).read().decode())" || true
done
say "vrouterctl service list"; ctl service list
say "vrouterctl conntrack list proto tcp dst 10.96.0.10/32"; ctl conntrack list proto tcp dst 10.96.0.10/32
say "vrouterctl conntrack stats"; ctl conntrack stats
say "vrouterctl neigh list"; ctl neigh list
say "vrouterctl stats"; ctl stats
say "vrouterctl drops"; ctl drops
say "demo finished; cleaning up"
