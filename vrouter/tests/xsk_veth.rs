//! AF_XDP ports over real veth pairs in throwaway network namespaces (needs root).
//!
//! Topology, all inside namespaces named `vxt-<pid>-*` and deleted afterwards (also on failure):
//!
//! ```text
//!  ns pa                ns r (the "router")                 ns pb
//!  a1 ───────veth─────── a0   [XDP + socket sa]
//!  [XDP + socket]             [XDP + socket sb]  b0 ───────veth─────── b1 [XDP generic + socket]
//!  192.0.2.2/24               192.0.2.1/24 (a0)
//!  2001:db8::2/64             2001:db8::1/64 (a0)
//! ```
//!
//! - Peer pa sends UDP frames from its own AF_XDP socket; the router receives them on sa and
//!   sends even-numbered ones back out of a0 and odd-numbered ones out of b0 (socket sb, same
//!   UMEM: cross-port forwarding by descriptor); pa and pb check what they receive.
//! - Host addresses: ping (IPv4 and IPv6) from pa to the router's kernel works because the XDP
//!   program passes the node's own traffic (including ARP and neighbor discovery); after
//!   removing the address the same ping fails and the frames show up on sa instead.
//! - The program's parser: hand-made frames (802.1Q-tagged IPv4 and ARP, ICMPv6 NS/NA, truncated
//!   headers) sent from pa's socket either reach sa or are passed to the kernel as expected.
//!   (This kernel has no 802.1Q support, so tagged host traffic cannot be pinged end to end.)
//! - Afterwards: no XDP program left on the interfaces, namespaces gone.
//!
//! Run: `cargo test -p vrouter --test xsk_veth -- --nocapture` as root.

use std::io::Write;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use vrouter::xdp::{XdpAttachment, XdpMode};
use vrouter::xsk::{
    run_in_netns, BindMode, FramePool, Umem, UmemConfig, XdpDesc, XskConfig, XskError, XskSocket,
};

const FRAMES: u32 = 256;
const MAGIC: &[u8; 6] = b"VXTEST";
const MAGIC_AT: usize = 42; // Ethernet 14 + IPv4 20 + UDP 8

// ---------------------------------------------------------------- environment

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// True when the test may run; prints SKIPPED (or fails under CI) otherwise.
fn require_root() -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("xsk_veth needs root, and CI is set: refusing to skip");
    }
    // Written to the stderr handle directly: libtest captures `eprintln!` but not this.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: needs root (xsk_veth creates namespaces, veths and AF_XDP sockets)"
    );
    false
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(cmd: &str, args: &[&str]) -> bool {
    run(cmd, args).status.success()
}

/// `ip` with arguments given as one whitespace-separated string; panics on failure.
fn ip(args: &str) -> String {
    sh("ip", &args.split_whitespace().collect::<Vec<_>>())
}

/// Network namespaces created by one test; deleting a namespace deletes the veths inside it.
/// Dropped (namespaces deleted) also when the test fails.
struct Namespaces(Vec<String>);

impl Namespaces {
    /// Creates `vxt-<pid>-<suffix>` for each suffix, with `lo` up.
    fn create(suffixes: &[&str]) -> Self {
        let mut all = Self(Vec::new());
        for s in suffixes {
            let name = format!("vxt-{}-{s}", std::process::id());
            ip(&format!("netns add {name}"));
            all.0.push(name.clone());
            ip(&format!("-n {name} link set lo up"));
        }
        all
    }

    fn name(&self, i: usize) -> String {
        self.0[i].clone()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}

/// A veth pair with one RX and one TX queue on each end (a port must bind every RX queue), and
/// both ends up.
fn veth(ns: &str, name: &str, peer_ns: &str, peer: &str) {
    ip(&format!(
        "-n {ns} link add {name} numrxqueues 1 numtxqueues 1 type veth \
         peer name {peer} netns {peer_ns} numrxqueues 1 numtxqueues 1"
    ));
    ip(&format!("-n {ns} link set {name} up"));
    ip(&format!("-n {peer_ns} link set {peer} up"));
}

/// The forwarding topology (see the file's documentation): namespaces r, pa, pb.
fn forwarding_topology() -> Namespaces {
    let t = Namespaces::create(&["r", "pa", "pb"]);
    let (r, pa, pb) = (t.name(0), t.name(1), t.name(2));
    veth(&r, "a0", &pa, "a1");
    veth(&r, "b0", &pb, "b1");
    ip(&format!("-n {r} addr add 192.0.2.1/24 dev a0"));
    ip(&format!("-n {r} addr add 2001:db8::1/64 dev a0 nodad"));
    ip(&format!("-n {pa} addr add 192.0.2.2/24 dev a1"));
    ip(&format!("-n {pa} addr add 2001:db8::2/64 dev a1 nodad"));
    t
}

fn os_error(e: &XskError) -> Option<i32> {
    match e {
        XskError::Sys { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

// ---------------------------------------------------------------- frames

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet/IPv4/UDP frame 192.0.2.2 -> 203.0.113.7 carrying MAGIC and `seq`.
fn test_frame(seq: u32) -> Vec<u8> {
    let payload_len = 56usize;
    let udp_len = 8 + payload_len;
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[192, 0, 2, 2]);
    ip[16..20].copy_from_slice(&[203, 0, 113, 7]);
    let c = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&40001u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(MAGIC);
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(14 + ip_len, 0xa5);
    f
}

fn test_seq(data: &[u8]) -> Option<u32> {
    if data.len() >= MAGIC_AT + 10 && &data[MAGIC_AT..MAGIC_AT + 6] == MAGIC {
        Some(u32::from_be_bytes(
            data[MAGIC_AT + 6..MAGIC_AT + 10].try_into().ok()?,
        ))
    } else {
        None
    }
}

// ---------------------------------------------------------------- ports

/// One worker's view: a UMEM, its pool, and sockets on it.
struct Port {
    umem: Umem,
    pool: FramePool,
}

impl Port {
    fn new() -> Self {
        let umem = Umem::new(UmemConfig {
            frame_count: 8192,
            frame_size: 2048,
            headroom: 0,
        })
        .expect("UMEM");
        let pool = FramePool::new(&umem);
        Self { umem, pool }
    }
}

fn small_rings() -> XskConfig {
    XskConfig {
        fill_size: 1024,
        comp_size: 1024,
        rx_size: 512,
        tx_size: 512,
        ..XskConfig::default()
    }
}

/// Kicks until the TX ring is empty (bounded).
fn flush_tx(s: &XskSocket) {
    for _ in 0..1000 {
        if s.tx_pending() == 0 {
            return;
        }
        s.kick_tx().expect("kick_tx");
    }
    panic!("TX ring did not drain: {} pending", s.tx_pending());
}

/// Receives on `s`, returns the test sequence numbers seen (after checking the bytes), frees
/// every frame and refills.
fn drain_peer(port: &mut Port, s: &mut XskSocket) -> Vec<u32> {
    let mut descs = [XdpDesc::default(); 64];
    let mut seen = Vec::new();
    loop {
        let n = s.rx_burst(&mut descs);
        for d in &descs[..n] {
            let data = port.umem.data(d).expect("RX descriptor inside the UMEM");
            if let Some(seq) = test_seq(data) {
                assert_eq!(data, &test_frame(seq)[..], "frame {seq} altered on the way");
                seen.push(seq);
            }
            port.pool.free(d.addr);
        }
        if n == 0 {
            break;
        }
    }
    port.pool.reclaim_completions(s);
    port.pool.refill(s, usize::MAX);
    seen
}

fn assert_no_xdp(ns: &str, dev: &str) {
    let out = sh("ip", &["-n", ns, "-d", "link", "show", "dev", dev]);
    assert!(
        !out.contains("prog/xdp") && !out.contains(" xdp"),
        "XDP program still attached to {dev} in {ns}:\n{out}"
    );
}

// ---------------------------------------------------------------- parser cases

fn eth(vlan: Option<u16>, ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    if let Some(id) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

fn ipv4(dst: [u8; 4], tag: u8) -> Vec<u8> {
    let mut ip = vec![0u8; 28];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&28u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[192, 0, 2, 2]);
    ip[16..20].copy_from_slice(&dst);
    let c = ipv4_checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip[20..28].copy_from_slice(&[0x9c, 0x40, 0x9c, 0x41, 0, 8, 0, tag]);
    ip
}

fn arp_request(tpa: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    a.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 192, 0, 2, 2]);
    a.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    a.extend_from_slice(&tpa);
    a
}

/// IPv6 + ICMPv6 neighbor solicitation (135) or advertisement (136) for `target`.
fn nd(icmp_type: u8, dst: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let src: [u8; 16] = "2001:db8::2"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let mut p = vec![0x60, 0, 0, 0, 0, 24, 58, 255];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[icmp_type, 0, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&target);
    p
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// Sends frames that the program must pass to the kernel, then frames it must redirect, from
/// pa's socket; checks that exactly the second group shows up on sa. All go through one queue
/// in order, so once the last redirected frame arrived, any wrongly redirected host frame
/// (sent earlier) would have arrived too.
fn parser_cases(router: &mut Port, sa: &mut XskSocket, peer: &mut Port, spa: &mut XskSocket) {
    let host: Vec<(&str, Vec<u8>)> = vec![
        (
            "tagged IPv4 to host",
            eth(Some(10), 0x0800, &ipv4([192, 0, 2, 1], 1)),
        ),
        (
            "tagged ARP for host",
            eth(Some(10), 0x0806, &arp_request([192, 0, 2, 1])),
        ),
        (
            "NS for host",
            eth(
                None,
                0x86dd,
                &nd(135, v6("ff02::1:ff00:1"), v6("2001:db8::1")),
            ),
        ),
        (
            "tagged NA for host",
            eth(Some(10), 0x86dd, &nd(136, v6("ff02::1"), v6("2001:db8::1"))),
        ),
        (
            "IPv4 to other host address",
            eth(None, 0x0800, &ipv4([198, 51, 100, 1], 2)),
        ),
    ];
    let mut truncated_v4 = eth(None, 0x0800, &ipv4([192, 0, 2, 1], 3));
    truncated_v4.truncate(14 + 19); // daddr cut off: cannot be proven a host frame
    let mut truncated_ns = eth(
        None,
        0x86dd,
        &nd(135, v6("ff02::1:ff00:1"), v6("2001:db8::1")),
    );
    truncated_ns.truncate(14 + 40 + 20); // target cut off
    let dataplane: Vec<(&str, Vec<u8>)> = vec![
        (
            "tagged IPv4 to other",
            eth(Some(10), 0x0800, &ipv4([203, 0, 113, 7], 4)),
        ),
        (
            "ARP for other",
            eth(None, 0x0806, &arp_request([192, 0, 2, 99])),
        ),
        (
            "NS for other",
            eth(
                None,
                0x86dd,
                &nd(135, v6("ff02::1:ff00:99"), v6("2001:db8::99")),
            ),
        ),
        ("truncated IPv4 to host", truncated_v4),
        ("truncated NS for host", truncated_ns),
        ("unknown ethertype", eth(None, 0x88b5, &[0u8; 46])),
        (
            "double-tagged IPv4 to host (only one tag is parsed)",
            eth(
                Some(10),
                0x8100,
                &[
                    &20u16.to_be_bytes()[..],
                    &0x0800u16.to_be_bytes(),
                    &ipv4([192, 0, 2, 1], 5),
                ]
                .concat(),
            ),
        ),
    ];
    let mut burst = Vec::new();
    for (_, f) in host.iter().chain(dataplane.iter()) {
        let addr = peer.pool.alloc().unwrap();
        peer.umem
            .frame_mut(addr, f.len())
            .unwrap()
            .copy_from_slice(f);
        burst.push(XdpDesc {
            addr,
            len: f.len() as u32,
            options: 0,
        });
    }
    assert_eq!(spa.tx_burst(&burst), burst.len());
    flush_tx(spa);

    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut descs = [XdpDesc::default(); 64];
    let deadline = Instant::now() + Duration::from_secs(3);
    let want_all = |got: &Vec<Vec<u8>>| dataplane.iter().all(|(_, f)| got.contains(f));
    while !want_all(&got) && Instant::now() < deadline {
        let n = sa.rx_burst(&mut descs);
        for d in &descs[..n] {
            got.push(router.umem.data(d).unwrap().to_vec());
            router.pool.free(d.addr);
        }
        router.pool.refill(sa, usize::MAX);
        peer.pool.reclaim_completions(spa);
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for (name, f) in &dataplane {
        assert!(got.contains(f), "{name}: expected on the socket, not seen");
    }
    for (name, f) in &host {
        assert!(
            !got.contains(f),
            "{name}: must go to the kernel, reached the socket"
        );
    }
    eprintln!(
        "parser: {} host frames passed to the kernel, {} frames redirected to the socket",
        host.len(),
        dataplane.len()
    );
}

// ---------------------------------------------------------------- the test

#[test]
fn forwarding_and_host_traffic_over_veth() {
    if !require_root() {
        return;
    }
    let topo = forwarding_topology();
    let (r, pa, pb) = (topo.name(0), topo.name(1), topo.name(2));

    // Router side: one UMEM, two ports (a0, b0), created inside ns r.
    let (mut router, mut att_a, mut att_b, mut sa, mut sb) = run_in_netns(&r, || {
        let router = Port::new();
        let att_a = XdpAttachment::attach("a0", XdpMode::Auto).expect("attach a0");
        let att_b = XdpAttachment::attach("b0", XdpMode::Auto).expect("attach b0");
        // What the kernel answers to a zero-copy bind on veth, and to a queue that does not
        // exist; both failed sockets are dropped and leave the queue free.
        let scratch = Umem::new(UmemConfig {
            frame_count: 64,
            frame_size: 2048,
            headroom: 0,
        })
        .unwrap();
        let zc = XskConfig {
            bind_mode: BindMode::ZeroCopy,
            ..small_rings()
        };
        let zc_err = XskSocket::new(&scratch, "a0", 0, &zc).expect_err("veth has no zero-copy");
        let bad_queue = XskConfig {
            bind_mode: BindMode::Copy,
            ..small_rings()
        };
        let q_err = XskSocket::new(&scratch, "a0", 1, &bad_queue).expect_err("a0 has one queue");
        eprintln!("zero-copy bind on veth: {zc_err}; bind to queue 1 of a one-queue veth: {q_err}");
        assert_eq!(os_error(&zc_err), Some(libc::EOPNOTSUPP), "{zc_err}");
        let sa = XskSocket::new(&router.umem, "a0", 0, &XskConfig::default()).expect("socket a0");
        let sb = XskSocket::new(&router.umem, "b0", 0, &XskConfig::default())
            .expect("socket b0 (shared UMEM)");
        (router, att_a, att_b, sa, sb)
    })
    .expect("enter ns r");
    // Peers: their own UMEMs; pb in generic mode to exercise it.
    let (mut peer_a, mut att_pa, mut spa) = run_in_netns(&pa, || {
        let p = Port::new();
        let att = XdpAttachment::attach("a1", XdpMode::Native).expect("attach a1");
        let s = XskSocket::new(&p.umem, "a1", 0, &small_rings()).expect("socket a1");
        (p, att, s)
    })
    .expect("enter ns pa");
    let (mut peer_b, mut att_pb, mut spb) = run_in_netns(&pb, || {
        let p = Port::new();
        let att = XdpAttachment::attach("b1", XdpMode::Generic).expect("attach b1");
        let s = XskSocket::new(&p.umem, "b1", 0, &small_rings()).expect("socket b1");
        (p, att, s)
    })
    .expect("enter ns pb");

    eprintln!(
        "attached: a0 {:?} (bpf link {}), b0 {:?}, a1 {:?}, b1 {:?}; sa zero-copy {}, sb zero-copy {}, \
         options {:?}; router UMEM zero-copy {:?}",
        att_a.attached_mode(),
        att_a.is_bpf_link(),
        att_b.attached_mode(),
        att_pa.attached_mode(),
        att_pb.attached_mode(),
        sa.is_zero_copy(),
        sb.is_zero_copy(),
        sa.options().unwrap(),
        router.umem.zero_copy(),
    );
    for att in [&att_a, &att_b, &att_pa, &att_pb] {
        assert!(
            att.is_bpf_link(),
            "{} attached through netlink",
            att.ifname()
        );
    }
    assert_eq!(att_pb.attached_mode(), XdpMode::Generic);
    assert_eq!(att_pa.attached_mode(), XdpMode::Native);
    assert!(
        !sa.is_zero_copy() && !sb.is_zero_copy(),
        "veth has no zero-copy"
    );

    att_a.register_socket(0, sa.fd()).unwrap();
    att_b.register_socket(0, sb.fd()).unwrap();
    att_pa.register_socket(0, spa.fd()).unwrap();
    att_pb.register_socket(0, spb.fd()).unwrap();
    for a in ["192.0.2.1", "2001:db8::1", "198.51.100.1"] {
        att_a.add_host_addr(a.parse().unwrap()).unwrap();
    }
    for a in ["192.0.2.2", "2001:db8::2", "198.51.100.2"] {
        att_pa.add_host_addr(a.parse().unwrap()).unwrap();
    }
    let mut hosts = att_a.host_addrs();
    hosts.sort();
    assert_eq!(hosts.len(), 3, "{hosts:?}");
    assert!(hosts.contains(&"192.0.2.1".parse::<IpAddr>().unwrap()));

    router.pool.refill(&mut sa, usize::MAX);
    router.pool.refill(&mut sb, usize::MAX);
    peer_a.pool.refill(&mut spa, usize::MAX);
    peer_b.pool.refill(&mut spb, usize::MAX);
    assert_eq!(sa.counters().filled, 4096);
    router.pool.check_invariant(0, &[&sa, &sb]).unwrap();

    // ---- forwarding: pa -> sa -> (even: a0 back to pa, odd: b0 to pb)
    let mut next_seq = 0u32;
    let mut at_pa = Vec::new();
    let mut at_pb = Vec::new();
    let mut foreign_on_router = 0u64;
    let mut descs = [XdpDesc::default(); 64];
    let mut to_a = Vec::with_capacity(64);
    let mut to_b = Vec::with_capacity(64);
    let deadline = Instant::now() + Duration::from_secs(10);
    while (at_pa.len() + at_pb.len()) < FRAMES as usize && Instant::now() < deadline {
        // pa sends a burst of up to 32
        let mut burst = Vec::new();
        while next_seq < FRAMES && burst.len() < 32 {
            let addr = peer_a.pool.alloc().expect("peer pool has frames");
            let f = test_frame(next_seq);
            peer_a
                .umem
                .frame_mut(addr, f.len())
                .unwrap()
                .copy_from_slice(&f);
            burst.push(XdpDesc {
                addr,
                len: f.len() as u32,
                options: 0,
            });
            next_seq += 1;
        }
        let sent = spa.tx_burst(&burst);
        assert_eq!(sent, burst.len(), "peer TX ring full");
        flush_tx(&spa);

        // router: one pass over sa
        loop {
            let n = sa.rx_burst(&mut descs);
            if n == 0 {
                break;
            }
            for d in &descs[..n] {
                match router.umem.data(d).and_then(test_seq) {
                    Some(seq) if seq % 2 == 0 => to_a.push(*d),
                    Some(_) => to_b.push(*d),
                    None => {
                        foreign_on_router += 1;
                        router.pool.free(d.addr);
                    }
                }
            }
            for (sock, q) in [(&mut sa, &mut to_a), (&mut sb, &mut to_b)] {
                let k = sock.tx_burst(q);
                router.pool.free_descs(&q[k..]); // not accepted: drop, never leak
                q.clear();
                flush_tx(sock);
            }
            router
                .pool
                .check_invariant(0, &[&sa, &sb])
                .unwrap_or_else(|e| panic!("router: {e}"));
        }
        router.pool.reclaim_completions(&mut sa);
        router.pool.reclaim_completions(&mut sb);
        router.pool.refill(&mut sa, usize::MAX);
        router.pool.refill(&mut sb, usize::MAX);

        at_pa.extend(drain_peer(&mut peer_a, &mut spa));
        at_pb.extend(drain_peer(&mut peer_b, &mut spb));
        if next_seq >= FRAMES {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    at_pa.sort_unstable();
    at_pb.sort_unstable();
    let even: Vec<u32> = (0..FRAMES).filter(|s| s % 2 == 0).collect();
    let odd: Vec<u32> = (0..FRAMES).filter(|s| s % 2 == 1).collect();
    eprintln!(
        "forwarding: pa got {} echoes, pb got {} cross-port frames, router freed {} other frames",
        at_pa.len(),
        at_pb.len(),
        foreign_on_router
    );
    assert_eq!(at_pa, even, "echoes back out of a0");
    assert_eq!(at_pb, odd, "cross-port frames out of b0 (same UMEM)");
    assert_eq!(sb.counters().transmitted, u64::from(FRAMES / 2));
    assert_eq!(
        sb.counters().completed,
        u64::from(FRAMES / 2),
        "completions on b0's ring"
    );

    let st = sa.statistics().unwrap();
    eprintln!(
        "sa statistics: {st:?}; sb statistics: {:?}",
        sb.statistics().unwrap()
    );
    assert_eq!(st.rx_dropped, 0);
    assert_eq!(st.rx_invalid_descs + st.tx_invalid_descs, 0);
    router.pool.check_invariant(0, &[&sa, &sb]).unwrap();
    peer_a.pool.check_invariant(0, &[&spa]).unwrap();
    peer_b.pool.check_invariant(0, &[&spb]).unwrap();

    // ---- host traffic goes to the kernel
    let ping = |args: &[&str]| {
        let mut a = vec!["netns", "exec", pa.as_str(), "ping", "-n", "-q"];
        a.extend_from_slice(args);
        ok("ip", &a)
    };
    assert!(
        ping(&["-c", "2", "-i", "0.2", "-W", "2", "192.0.2.1"]),
        "IPv4 ping to a host address"
    );
    assert!(
        ping(&["-6", "-c", "2", "-i", "0.2", "-W", "2", "2001:db8::1"]),
        "IPv6 ping (NS/NA passed)"
    );

    // ---- the parser, with hand-made frames: the host ones must not reach sa
    parser_cases(&mut router, &mut sa, &mut peer_a, &mut spa);
    router.pool.check_invariant(0, &[&sa, &sb]).unwrap();

    // ---- without the host address, the same traffic goes to the socket
    loop {
        let n = sa.rx_burst(&mut descs);
        if n == 0 {
            break;
        }
        router.pool.free_descs(&descs[..n]);
    }
    att_a
        .remove_host_addr("192.0.2.1".parse().unwrap())
        .unwrap();
    assert!(
        !ping(&["-c", "1", "-W", "1", "192.0.2.1"]),
        "ping must fail without the host address"
    );
    let mut to_host_seen = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while to_host_seen == 0 && Instant::now() < deadline {
        let n = sa.rx_burst(&mut descs);
        for d in &descs[..n] {
            let data = router.umem.data(d).unwrap();
            let ipv4_to =
                data.len() >= 34 && data[12..14] == [0x08, 0x00] && data[30..34] == [192, 0, 2, 1];
            let arp_for =
                data.len() >= 42 && data[12..14] == [0x08, 0x06] && data[38..42] == [192, 0, 2, 1];
            if ipv4_to || arp_for {
                to_host_seen += 1;
            }
            router.pool.free(d.addr);
        }
    }
    assert!(
        to_host_seen > 0,
        "traffic for a removed host address must reach the socket"
    );
    att_a.add_host_addr("192.0.2.1".parse().unwrap()).unwrap();
    assert!(
        ping(&["-c", "1", "-W", "2", "192.0.2.1"]),
        "ping works again"
    );

    // ---- teardown: unregister, close sockets into their pools, detach
    att_a.unregister_socket(0).unwrap();
    att_b.unregister_socket(0).unwrap();
    att_a.unregister_socket(0).unwrap(); // idempotent
    drop(att_a);
    drop(att_b);
    drop(att_pa);
    drop(att_pb);
    for (ns, dev) in [
        (r.as_str(), "a0"),
        (r.as_str(), "b0"),
        (pa.as_str(), "a1"),
        (pb.as_str(), "b1"),
    ] {
        assert_no_xdp(ns, dev);
    }
    let ra = sa.close(&mut router.pool);
    let rb = sb.close(&mut router.pool);
    eprintln!(
        "closed sa: {ra:?}, sb: {rb:?}; router pool {} free of {}",
        router.pool.len(),
        router.pool.total()
    );
    router
        .pool
        .check_counts(0, 0)
        .unwrap_or_else(|e| panic!("after close: {e}"));
    let _ = spa.close(&mut peer_a.pool);
    let _ = spb.close(&mut peer_b.pool);
    peer_a.pool.check_counts(0, 0).unwrap();
    peer_b.pool.check_counts(0, 0).unwrap();

    drop(topo);
    let left = sh("ip", &["netns", "list"]);
    for ns in [&r, &pa, &pb] {
        assert!(!left.contains(ns.as_str()), "namespace {ns} left behind");
    }
}

/// One UMEM shared by sockets on three devices. The device of the socket that registered the
/// UMEM goes away (the kernel unbinds that socket); a new socket still joins the UMEM through
/// another bound socket, and closing every socket returns every frame.
#[test]
fn shared_umem_outlives_a_removed_port() {
    if !require_root() {
        return;
    }
    let ns = Namespaces::create(&["s"]);
    let s = ns.name(0);
    for (a, b) in [("c0", "c1"), ("d0", "d1"), ("e0", "e1"), ("f0", "f1")] {
        veth(&s, a, &s, b);
    }
    let mut port = Port::new();
    let umem = &port.umem;
    let (mut s1, mut s2) = run_in_netns(&s, || {
        let s1 = XskSocket::new(umem, "c0", 0, &small_rings()).expect("c0 registers the UMEM");
        let s2 = XskSocket::new(umem, "d0", 0, &small_rings()).expect("d0 shares it");
        (s1, s2)
    })
    .expect("enter ns");
    assert_eq!(port.pool.refill(&mut s1, 64), 64);
    assert_eq!(port.pool.refill(&mut s2, 64), 64);

    ip(&format!("-n {s} link del c0"));
    let umem = &port.umem;
    let mut s3 = run_in_netns(&s, || XskSocket::new(umem, "e0", 0, &small_rings()))
        .expect("enter ns")
        .expect("e0 joins through d0's socket although c0's socket is unbound");
    assert_eq!(port.pool.refill(&mut s3, 64), 64);
    port.pool.check_invariant(0, &[&s1, &s2, &s3]).unwrap();

    // A UMEM whose only socket was unbound cannot be joined: the kernel says EBADF.
    let lone = Umem::new(UmemConfig {
        frame_count: 64,
        frame_size: 2048,
        headroom: 0,
    })
    .unwrap();
    let t1 = run_in_netns(&s, || XskSocket::new(&lone, "f0", 0, &small_rings()))
        .expect("enter ns")
        .expect("f0 registers the second UMEM");
    ip(&format!("-n {s} link del f0"));
    let err = run_in_netns(&s, || XskSocket::new(&lone, "d1", 0, &small_rings()))
        .expect("enter ns")
        .expect_err("no bound socket left on the second UMEM");
    eprintln!("joining a UMEM whose only socket lost its device: {err}");
    assert_eq!(os_error(&err), Some(libc::EBADF), "{err}");
    drop(t1);

    for sock in [s1, s2, s3] {
        let report = sock.close(&mut port.pool);
        assert_eq!(report.lost, 0, "{report:?}");
    }
    assert_eq!(port.pool.len() as u64, port.pool.total());
    assert_eq!(port.pool.total(), u64::from(port.umem.frame_count()));
    port.pool.check_counts(0, 0).unwrap();
    drop(ns);
    assert!(!sh("ip", &["netns", "list"]).contains(&s));
}
