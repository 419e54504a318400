//! Test frames: the tag, frame templates built once per flow, and the sink's parser.
//!
//! # Layout
//! `Ethernet | IPv4 or IPv6 | UDP or TCP (SYN, no options) | tag (18 bytes) | zero padding`,
//! optionally wrapped in `Ethernet | IPv4 or IPv6 | UDP (dst 4789) | VXLAN` (RFC 7348).
//! The tag directly follows the L4 header: `magic u16 = 0x5650 | seq u64 | tx_ns u64`, all
//! big-endian.
//!
//! # Checksums
//! IPv4 header checksums are computed once per template (nothing in an IP header changes per
//! packet). The inner UDP/TCP checksum is always correct, IPv4 included: the template holds
//! the checksum of the frame with `seq = tx_ns = 0`, and [`Templates::write`] adds the tag's
//! words to it (RFC 1624 incremental update: eight 16-bit additions per packet, negligible
//! next to the frame copy). The outer UDP checksum of VXLAN is 0 over IPv4 (RFC 7348 says it
//! SHOULD be) and correct over IPv6 (updated the same way, for the tag and the inner checksum
//! word). A UDP checksum that computes to 0 is sent as 0xFFFF (RFC 768).
//!
//! # Parser
//! [`parse_tag`] never panics and never reads out of bounds: every access is a checked slice.
//! It accepts one 802.1Q/802.1ad tag, IPv4 (not a non-first fragment) or IPv6 (no extension
//! headers), UDP or TCP, and decapsulates VXLAN (UDP destination port 4789) once. Anything
//! else, or a tag with the wrong magic, is `None`. Checksums are not verified by the sink.

use std::net::IpAddr;

/// First two bytes of every tag.
pub const TAG_MAGIC: u16 = 0x5650;
/// Bytes of the tag: magic, seq, tx_ns.
pub const TAG_LEN: usize = 18;
/// Frame check sequence: counted in `--size` (RFC 2544), not put on the TX ring.
pub const FCS_LEN: usize = 4;
/// Smallest `--size`.
pub const MIN_SIZE: usize = 64;
/// Largest `--size` (1500-byte IP MTU).
pub const MAX_SIZE: usize = 1518;
/// VXLAN's UDP destination port.
pub const VXLAN_PORT: u16 = 4789;
/// Most template bytes (flows × frame length) the generator builds up front.
pub const MAX_TEMPLATE_BYTES: usize = 64 << 20;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;
const TCP_LEN: usize = 20;
const VXLAN_LEN: usize = 8;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// The per-packet tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// Sequence number (one counter per generator run, from 0).
    pub seq: u64,
    /// CLOCK_MONOTONIC in ns when the batch was put on the TX ring.
    pub tx_ns: u64,
}

impl Tag {
    /// The tag's 18 bytes.
    pub fn to_bytes(self) -> [u8; TAG_LEN] {
        let mut b = [0u8; TAG_LEN];
        b[0..2].copy_from_slice(&TAG_MAGIC.to_be_bytes());
        b[2..10].copy_from_slice(&self.seq.to_be_bytes());
        b[10..18].copy_from_slice(&self.tx_ns.to_be_bytes());
        b
    }

    /// The tag at the start of `bytes`, if there is room and the magic matches.
    pub fn parse(bytes: &[u8]) -> Option<Tag> {
        let b = bytes.get(..TAG_LEN)?;
        if u16::from_be_bytes([b[0], b[1]]) != TAG_MAGIC {
            return None;
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[2..10]);
        let mut tx = [0u8; 8];
        tx.copy_from_slice(&b[10..18]);
        Some(Tag {
            seq: u64::from_be_bytes(seq),
            tx_ns: u64::from_be_bytes(tx),
        })
    }
}

/// L4 protocol of the test frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// UDP datagrams.
    Udp,
    /// TCP SYN segments carrying the tag as payload.
    TcpSyn,
}

impl Proto {
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::TcpSyn => "tcp-syn",
        }
    }

    fn header_len(self) -> usize {
        match self {
            Proto::Udp => UDP_LEN,
            Proto::TcpSyn => TCP_LEN,
        }
    }

    fn number(self) -> u8 {
        match self {
            Proto::Udp => PROTO_UDP,
            Proto::TcpSyn => PROTO_TCP,
        }
    }
}

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl std::str::FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut mac = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
        }
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.is_empty() || part.len() > 2 {
                return Err(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
            }
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
        }
        Ok(Mac(mac))
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// VXLAN encapsulation of the test frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    /// Outer source address.
    pub outer_src: IpAddr,
    /// Outer destination address (same family as `outer_src`).
    pub outer_dst: IpAddr,
    /// Inner source MAC.
    pub inner_src_mac: Mac,
    /// Inner destination MAC.
    pub inner_dst_mac: Mac,
}

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    /// Source MAC (outer one with VXLAN).
    pub src_mac: Mac,
    /// Destination MAC (outer one with VXLAN).
    pub dst_mac: Mac,
    /// Source address of flow 0.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// L4 protocol.
    pub proto: Proto,
    /// Source port of flow 0.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Number of flows (at least 1).
    pub flows: u32,
    /// Frame size on the wire including the FCS (of the inner frame with VXLAN).
    pub size: usize,
    /// VXLAN encapsulation.
    pub vxlan: Option<VxlanSpec>,
}

/// Why a spec cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// `--size` is outside 64..=1518.
    #[error(
        "--size {0} is out of range: {MIN_SIZE}..={MAX_SIZE} (bytes on the wire, FCS included)"
    )]
    SizeOutOfRange(usize),
    /// The frame cannot hold headers and tag.
    #[error("--size {size} is too small for {what}: the headers and the 18-byte tag need --size {min} or more")]
    TooSmall {
        /// Requested size.
        size: usize,
        /// Smallest size for this combination.
        min: usize,
        /// The combination, in words.
        what: String,
    },
    /// Source and destination of different families.
    #[error("{0}: source and destination must be both IPv4 or both IPv6")]
    MixedFamilies(&'static str),
    /// No flows.
    #[error("--flows must be at least 1")]
    NoFlows,
    /// VNI does not fit 24 bits.
    #[error("--vxlan {0}: a VNI has 24 bits (at most 16777215)")]
    VniOutOfRange(u32),
    /// Too many template bytes.
    #[error("{flows} flows of {len} bytes need {} MiB of templates, more than the {} MiB limit: use fewer flows or smaller frames", (flows * len) >> 20, MAX_TEMPLATE_BYTES >> 20)]
    TooManyFlows {
        /// Flows.
        flows: usize,
        /// Frame length.
        len: usize,
    },
}

impl FrameSpec {
    /// Smallest `--size` that holds headers and tag for this combination (at least 64).
    pub fn min_size(&self) -> usize {
        let ip = if self.src.is_ipv4() {
            IPV4_LEN
        } else {
            IPV6_LEN
        };
        (ETH_LEN + ip + self.proto.header_len() + TAG_LEN + FCS_LEN).max(MIN_SIZE)
    }

    /// Bytes put on the TX ring per frame (outer frame with VXLAN, no FCS).
    pub fn frame_len(&self) -> usize {
        let inner = self.size - FCS_LEN;
        match &self.vxlan {
            None => inner,
            Some(v) => inner + outer_overhead(v.outer_src),
        }
    }

    fn describe(&self) -> String {
        let family = if self.src.is_ipv4() { "IPv4" } else { "IPv6" };
        let mut s = format!("{family} {}", self.proto.name());
        if self.vxlan.is_some() {
            s.push_str(" (inner frame of VXLAN)");
        }
        s
    }

    /// Checks sizes and families.
    pub fn validate(&self) -> Result<(), FrameError> {
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err(FrameError::MixedFamilies("--src/--dst"));
        }
        if let Some(v) = &self.vxlan {
            if v.outer_src.is_ipv4() != v.outer_dst.is_ipv4() {
                return Err(FrameError::MixedFamilies("--outer-src/--outer-dst"));
            }
            if v.vni >= 1 << 24 {
                return Err(FrameError::VniOutOfRange(v.vni));
            }
        }
        if self.flows == 0 {
            return Err(FrameError::NoFlows);
        }
        if !(MIN_SIZE..=MAX_SIZE).contains(&self.size) {
            return Err(FrameError::SizeOutOfRange(self.size));
        }
        let min = self.min_size();
        if self.size < min {
            return Err(FrameError::TooSmall {
                size: self.size,
                min,
                what: self.describe(),
            });
        }
        let (flows, len) = (self.flows as usize, self.frame_len());
        if flows.saturating_mul(len) > MAX_TEMPLATE_BYTES {
            return Err(FrameError::TooManyFlows { flows, len });
        }
        Ok(())
    }
}

fn outer_overhead(outer_src: IpAddr) -> usize {
    let ip = if outer_src.is_ipv4() {
        IPV4_LEN
    } else {
        IPV6_LEN
    };
    ETH_LEN + ip + UDP_LEN + VXLAN_LEN
}

/// `addr + n`, wrapping within the family.
fn add_to_addr(addr: IpAddr, n: u32) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).wrapping_add(n).into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).wrapping_add(u128::from(n)).into()),
    }
}

fn ip_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// One's-complement sum of `data` as big-endian 16-bit words (odd tail padded with 0), added
/// to `acc`, not folded.
fn sum_words(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Internet checksum of `data` with an initial (unfolded) sum.
fn checksum(data: &[u8], init: u64) -> u16 {
    !fold(sum_words(data, init))
}

/// Sum of the pseudo-header of an L4 segment of `len` bytes.
fn pseudo_header_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u64 {
    let acc = sum_words(&ip_bytes(src), 0);
    let acc = sum_words(&ip_bytes(dst), acc);
    acc + u64::from(proto) + len as u64
}

/// RFC 1624: the checksum `ck` after words summing to `added` were added to the covered data
/// (subtracted words are added as their complement by the caller).
fn checksum_add(ck: u16, added: u64) -> u16 {
    !fold(u64::from(!ck) + added)
}

fn udp_checksum_value(ck: u16) -> u16 {
    if ck == 0 {
        0xffff
    } else {
        ck
    }
}

/// Writes an IP header for an L4 payload of `l4_len` bytes at the start of `out`; returns
/// its length.
fn write_ip(out: &mut [u8], src: IpAddr, dst: IpAddr, proto: u8, l4_len: usize) -> usize {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = &mut out[..IPV4_LEN];
            h[0] = 0x45;
            h[1] = 0;
            h[2..4].copy_from_slice(&((IPV4_LEN + l4_len) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&0u16.to_be_bytes());
            h[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
            h[8] = 64;
            h[9] = proto;
            h[10..12].copy_from_slice(&[0, 0]);
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let ck = checksum(h, 0);
            h[10..12].copy_from_slice(&ck.to_be_bytes());
            IPV4_LEN
        }
        (s, d) => {
            let h = &mut out[..IPV6_LEN];
            h[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
            h[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            h[6] = proto;
            h[7] = 64;
            h[8..24].copy_from_slice(&ip_bytes(s));
            h[24..40].copy_from_slice(&ip_bytes(d));
            IPV6_LEN
        }
    }
}

fn write_eth(out: &mut [u8], dst: Mac, src: Mac, ip: IpAddr) -> usize {
    out[0..6].copy_from_slice(&dst.0);
    out[6..12].copy_from_slice(&src.0);
    let ethertype = if ip.is_ipv4() {
        ETHERTYPE_IPV4
    } else {
        ETHERTYPE_IPV6
    };
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
    ETH_LEN
}

/// One flow's addresses and ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Flow {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
}

/// Builds a plain frame (no VXLAN) of `out.len()` bytes with a zero tag. Returns the offsets
/// of the tag and of the L4 checksum.
fn write_plain(
    out: &mut [u8],
    dst_mac: Mac,
    src_mac: Mac,
    flow: Flow,
    proto: Proto,
) -> (usize, usize) {
    out.fill(0);
    let mut off = write_eth(out, dst_mac, src_mac, flow.src);
    let l4_len = out.len()
        - off
        - if flow.src.is_ipv4() {
            IPV4_LEN
        } else {
            IPV6_LEN
        };
    off += write_ip(&mut out[off..], flow.src, flow.dst, proto.number(), l4_len);
    let l4_start = off;
    let l4 = &mut out[l4_start..];
    l4[0..2].copy_from_slice(&flow.sport.to_be_bytes());
    l4[2..4].copy_from_slice(&flow.dport.to_be_bytes());
    let csum_at = match proto {
        Proto::Udp => {
            l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            6
        }
        Proto::TcpSyn => {
            l4[4..8].copy_from_slice(&1u32.to_be_bytes()); // sequence number
            l4[12] = 5 << 4; // data offset: 5 words, no options
            l4[13] = 0x02; // SYN
            l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
            16
        }
    };
    let tag_at = proto.header_len();
    l4[tag_at..tag_at + TAG_LEN].copy_from_slice(&Tag { seq: 0, tx_ns: 0 }.to_bytes());
    let pseudo = pseudo_header_sum(flow.src, flow.dst, proto.number(), l4_len);
    let mut ck = checksum(l4, pseudo);
    if proto == Proto::Udp {
        ck = udp_checksum_value(ck);
    }
    l4[csum_at..csum_at + 2].copy_from_slice(&ck.to_be_bytes());
    (l4_start + tag_at, l4_start + csum_at)
}

/// Outer UDP source port for an inner flow: a hash of its 5-tuple folded into 49152..=65535
/// (RFC 7348 section 5 suggests a hash of the inner headers, in the dynamic port range).
pub fn vxlan_source_port(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> u16 {
    let mut h: u32 = 0x811c_9dc5; // FNV-1a
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    eat(&ip_bytes(src));
    eat(&ip_bytes(dst));
    eat(&[proto]);
    eat(&sport.to_be_bytes());
    eat(&dport.to_be_bytes());
    49152 + (h % 16384) as u16
}

/// Prebuilt frames, one per flow, all of the same length and layout.
#[derive(Debug, Clone)]
pub struct Templates {
    data: Vec<u8>,
    len: usize,
    flows: usize,
    tag_at: usize,
    inner_csum_at: usize,
    outer_csum_at: Option<usize>,
}

impl Templates {
    /// Builds the frames of every flow of `spec` (validated first).
    pub fn build(spec: &FrameSpec) -> Result<Templates, FrameError> {
        spec.validate()?;
        let len = spec.frame_len();
        let flows = spec.flows as usize;
        let mut data = vec![0u8; len * flows];
        let mut layout = (0, 0, None);
        for (i, out) in data.chunks_exact_mut(len).enumerate() {
            let i = i as u32;
            let flow = Flow {
                src: add_to_addr(spec.src, i / 65536),
                dst: spec.dst,
                sport: spec.sport.wrapping_add((i % 65536) as u16),
                dport: spec.dport,
            };
            layout = match &spec.vxlan {
                None => {
                    let (tag, csum) =
                        write_plain(out, spec.dst_mac, spec.src_mac, flow, spec.proto);
                    (tag, csum, None)
                }
                Some(v) => write_vxlan(out, spec, v, flow),
            };
        }
        Ok(Templates {
            data,
            len,
            flows,
            tag_at: layout.0,
            inner_csum_at: layout.1,
            outer_csum_at: layout.2,
        })
    }

    /// Bytes of each frame on the TX ring.
    pub fn frame_len(&self) -> usize {
        self.len
    }

    /// Number of flows.
    pub fn flows(&self) -> usize {
        self.flows
    }

    /// The template of `flow` (tag zero).
    pub fn template(&self, flow: usize) -> &[u8] {
        &self.data[flow * self.len..][..self.len]
    }

    /// Writes flow `flow`'s frame with `tag` into `out[..frame_len()]`, checksums updated.
    /// Panics if `out` is shorter than [`frame_len`](Self::frame_len) or `flow` out of range
    /// (callers size both from this type).
    pub fn write(&self, flow: usize, tag: Tag, out: &mut [u8]) {
        let out = &mut out[..self.len];
        out.copy_from_slice(self.template(flow));
        let bytes = tag.to_bytes();
        out[self.tag_at..self.tag_at + TAG_LEN].copy_from_slice(&bytes);
        // The template's tag words after the magic are zero: the update adds the new ones.
        let added = sum_words(&bytes[2..], 0);
        let at = self.inner_csum_at;
        let old = u16::from_be_bytes([out[at], out[at + 1]]);
        let mut new = checksum_add(old, added);
        if self.is_udp_at(at) {
            new = udp_checksum_value(new);
        }
        out[at..at + 2].copy_from_slice(&new.to_be_bytes());
        if let Some(o) = self.outer_csum_at {
            let outer = u16::from_be_bytes([out[o], out[o + 1]]);
            // Covered words changed: the tag's, and the inner checksum (old -> new).
            let delta = added + u64::from(!old) + u64::from(new);
            let outer = udp_checksum_value(checksum_add(outer, delta));
            out[o..o + 2].copy_from_slice(&outer.to_be_bytes());
        }
    }

    /// Whether the inner checksum at `at` is a UDP one (it sits 6 bytes into its header, the
    /// tag 8 bytes after the header's start), as opposed to TCP's (16 into a 20-byte header).
    fn is_udp_at(&self, at: usize) -> bool {
        self.tag_at == at + 2
    }
}

/// Builds a VXLAN frame: outer headers, then the plain inner frame. Returns tag offset, inner
/// checksum offset and outer checksum offset (IPv6 outer only).
fn write_vxlan(
    out: &mut [u8],
    spec: &FrameSpec,
    v: &VxlanSpec,
    flow: Flow,
) -> (usize, usize, Option<usize>) {
    let overhead = outer_overhead(v.outer_src);
    let (outer, inner) = out.split_at_mut(overhead);
    let (tag, csum) = write_plain(inner, v.inner_dst_mac, v.inner_src_mac, flow, spec.proto);
    outer.fill(0);
    let mut off = write_eth(outer, spec.dst_mac, spec.src_mac, v.outer_src);
    let udp_len = UDP_LEN + VXLAN_LEN + inner.len();
    off += write_ip(
        &mut outer[off..],
        v.outer_src,
        v.outer_dst,
        PROTO_UDP,
        udp_len,
    );
    let udp_at = off;
    let sport = vxlan_source_port(
        flow.src,
        flow.dst,
        spec.proto.number(),
        flow.sport,
        flow.dport,
    );
    outer[off..off + 2].copy_from_slice(&sport.to_be_bytes());
    outer[off + 2..off + 4].copy_from_slice(&VXLAN_PORT.to_be_bytes());
    outer[off + 4..off + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    off += UDP_LEN;
    outer[off] = 0x08; // I flag: the VNI is valid
    outer[off + 4..off + 7].copy_from_slice(&v.vni.to_be_bytes()[1..]);
    let outer_csum = if v.outer_src.is_ipv4() {
        None
    } else {
        let pseudo = pseudo_header_sum(v.outer_src, v.outer_dst, PROTO_UDP, udp_len);
        let acc = sum_words(&outer[udp_at..], pseudo);
        let ck = udp_checksum_value(!fold(sum_words(inner, acc)));
        outer[udp_at + 6..udp_at + 8].copy_from_slice(&ck.to_be_bytes());
        Some(udp_at + 6)
    };
    (overhead + tag, overhead + csum, outer_csum)
}

/// A tagged frame as the sink sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The tag.
    pub tag: Tag,
    /// Whether the tag was inside a VXLAN packet.
    pub vxlan: bool,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Finds the tag of a received frame (see the module docs for what is accepted).
pub fn parse_tag(frame: &[u8]) -> Option<Parsed> {
    parse_ethernet(frame, true)
}

fn parse_ethernet(frame: &[u8], allow_vxlan: bool) -> Option<Parsed> {
    let mut ethertype = be16(frame, 12)?;
    let mut off = ETH_LEN;
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        ethertype = be16(frame, off + 2)?;
        off += 4;
    }
    let ip = frame.get(off..)?;
    let (proto, l4) = match ethertype {
        ETHERTYPE_IPV4 => {
            let first = *ip.first()?;
            let ihl = usize::from(first & 0x0f) * 4;
            if first >> 4 != 4 || ihl < IPV4_LEN {
                return None;
            }
            if be16(ip, 6)? & 0x1fff != 0 {
                return None; // not the first fragment: no L4 header here
            }
            let total = usize::from(be16(ip, 2)?);
            let end = total.min(ip.len());
            (*ip.get(9)?, ip.get(ihl..end)?)
        }
        ETHERTYPE_IPV6 => {
            if *ip.first()? >> 4 != 6 {
                return None;
            }
            let payload = usize::from(be16(ip, 4)?);
            let end = (IPV6_LEN + payload).min(ip.len());
            (*ip.get(6)?, ip.get(IPV6_LEN..end)?)
        }
        _ => return None,
    };
    match proto {
        PROTO_UDP => {
            let payload = l4.get(UDP_LEN..)?;
            if allow_vxlan && be16(l4, 2)? == VXLAN_PORT {
                // VXLAN header: flags with the I bit, then the inner frame.
                if payload.first()? & 0x08 == 0 {
                    return None;
                }
                let inner = parse_ethernet(payload.get(VXLAN_LEN..)?, false)?;
                return Some(Parsed {
                    vxlan: true,
                    ..inner
                });
            }
            Some(Parsed {
                tag: Tag::parse(payload)?,
                vxlan: false,
            })
        }
        PROTO_TCP => {
            let data_offset = usize::from(*l4.get(12)? >> 4) * 4;
            if data_offset < TCP_LEN {
                return None;
            }
            Some(Parsed {
                tag: Tag::parse(l4.get(data_offset..)?)?,
                vxlan: false,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const A: Mac = Mac([0x02, 0, 0, 0, 0, 0xaa]);
    const B: Mac = Mac([0x02, 0, 0, 0, 0, 0xbb]);

    fn spec(src: &str, dst: &str, proto: Proto, size: usize) -> FrameSpec {
        FrameSpec {
            src_mac: A,
            dst_mac: B,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            sport: 1024,
            dport: 9,
            flows: 1,
            size,
            vxlan: None,
        }
    }

    fn vxlan(mut s: FrameSpec, outer_src: &str, outer_dst: &str) -> FrameSpec {
        s.vxlan = Some(VxlanSpec {
            vni: 0x123456,
            outer_src: outer_src.parse().unwrap(),
            outer_dst: outer_dst.parse().unwrap(),
            inner_src_mac: Mac([2, 0, 0, 0, 0, 1]),
            inner_dst_mac: Mac([2, 0, 0, 0, 0, 2]),
        });
        s
    }

    /// Checks IP and L4 checksums of a plain frame with etherparse; returns (sport, tag bytes).
    fn verify_plain(frame: &[u8]) -> (u16, Vec<u8>) {
        let p = SlicedPacket::from_ethernet(frame).expect("etherparse parses the frame");
        let (src, dst) = match &p.net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header().to_header();
                assert_eq!(
                    h.header_checksum,
                    h.calc_header_checksum(),
                    "IPv4 header checksum"
                );
                (
                    IpAddr::V4(h.source.into()),
                    IpAddr::V4(h.destination.into()),
                )
            }
            Some(NetSlice::Ipv6(ip)) => {
                let h = ip.header();
                (
                    IpAddr::V6(h.source_addr()),
                    IpAddr::V6(h.destination_addr()),
                )
            }
            other => panic!("no IP layer: {other:?}"),
        };
        match &p.transport {
            Some(TransportSlice::Udp(u)) => {
                let h = u.to_header();
                let expected = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => h
                        .calc_checksum_ipv4_raw(s.octets(), d.octets(), u.payload())
                        .unwrap(),
                    (IpAddr::V6(s), IpAddr::V6(d)) => h
                        .calc_checksum_ipv6_raw(s.octets(), d.octets(), u.payload())
                        .unwrap(),
                    _ => unreachable!(),
                };
                assert_eq!(h.checksum, expected, "UDP checksum");
                assert_eq!(usize::from(h.length), 8 + u.payload().len());
                (h.source_port, u.payload().to_vec())
            }
            Some(TransportSlice::Tcp(t)) => {
                let h = t.to_header();
                assert!(h.syn && !h.ack, "a SYN");
                let expected = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => h
                        .calc_checksum_ipv4_raw(s.octets(), d.octets(), t.payload())
                        .unwrap(),
                    (IpAddr::V6(s), IpAddr::V6(d)) => h
                        .calc_checksum_ipv6_raw(s.octets(), d.octets(), t.payload())
                        .unwrap(),
                    _ => unreachable!(),
                };
                assert_eq!(h.checksum, expected, "TCP checksum");
                (h.source_port, t.payload().to_vec())
            }
            other => panic!("no L4 layer: {other:?}"),
        }
    }

    fn tags() -> [Tag; 4] {
        [
            Tag { seq: 0, tx_ns: 0 },
            Tag {
                seq: 1,
                tx_ns: 123_456_789,
            },
            Tag {
                seq: u64::MAX,
                tx_ns: u64::MAX,
            },
            Tag {
                seq: 0xdead_beef_0000_ffff,
                tx_ns: 0xffff_0000_1234_5678,
            },
        ]
    }

    #[test]
    fn tag_round_trip() {
        for t in tags() {
            let b = t.to_bytes();
            assert_eq!(&b[..2], &[0x56, 0x50]);
            assert_eq!(Tag::parse(&b), Some(t));
            assert_eq!(Tag::parse(&b[..17]), None, "truncated");
        }
        let mut b = tags()[1].to_bytes();
        b[0] = 0x57;
        assert_eq!(Tag::parse(&b), None, "wrong magic");
    }

    #[test]
    fn plain_frames_have_correct_checksums_and_tags() {
        let cases = [
            ("10.0.0.1", "10.0.0.2", Proto::Udp, 64),
            ("10.0.0.1", "10.0.0.2", Proto::Udp, 1518),
            ("10.0.0.1", "10.0.0.2", Proto::TcpSyn, 76),
            ("10.0.0.1", "10.0.0.2", Proto::TcpSyn, 1518),
            ("fd00::1", "fd00::2", Proto::Udp, 84),
            ("fd00::1", "fd00::2", Proto::Udp, 1518),
            ("fd00::1", "fd00::2", Proto::TcpSyn, 96),
            ("fd00::1", "fd00::2", Proto::TcpSyn, 1000),
        ];
        for (src, dst, proto, size) in cases {
            let s = spec(src, dst, proto, size);
            let t = Templates::build(&s).unwrap_or_else(|e| panic!("{src} {proto:?} {size}: {e}"));
            assert_eq!(t.frame_len(), size - 4);
            let mut out = vec![0u8; 2048];
            for tag in tags() {
                t.write(0, tag, &mut out);
                let frame = &out[..t.frame_len()];
                let (sport, payload) = verify_plain(frame);
                assert_eq!(sport, 1024);
                assert_eq!(payload.len(), size - 4 - (s.min_size() - 4 - TAG_LEN));
                assert_eq!(Tag::parse(&payload), Some(tag));
                assert_eq!(
                    parse_tag(frame),
                    Some(Parsed { tag, vxlan: false }),
                    "{src} {proto:?} {size}"
                );
            }
        }
    }

    #[test]
    fn minimum_sizes_are_exact_and_smaller_is_rejected() {
        let cases = [
            ("10.0.0.1", "10.0.0.2", Proto::Udp, 64),
            ("10.0.0.1", "10.0.0.2", Proto::TcpSyn, 76),
            ("fd00::1", "fd00::2", Proto::Udp, 84),
            ("fd00::1", "fd00::2", Proto::TcpSyn, 96),
        ];
        for (src, dst, proto, min) in cases {
            let s = spec(src, dst, proto, min);
            assert_eq!(s.min_size(), min);
            Templates::build(&s).unwrap();
            if min > 64 {
                let err = Templates::build(&spec(src, dst, proto, min - 1)).unwrap_err();
                assert_eq!(
                    err,
                    FrameError::TooSmall {
                        size: min - 1,
                        min,
                        what: s.describe()
                    }
                );
                assert!(err.to_string().contains(&format!("--size {min}")), "{err}");
            }
        }
        for size in [63, 1519] {
            let err = Templates::build(&spec("10.0.0.1", "10.0.0.2", Proto::Udp, size));
            assert_eq!(err.unwrap_err(), FrameError::SizeOutOfRange(size));
        }
        let err = Templates::build(&spec("10.0.0.1", "fd00::2", Proto::Udp, 64)).unwrap_err();
        assert!(matches!(err, FrameError::MixedFamilies(_)));
    }

    #[test]
    fn flows_vary_source_port_then_address() {
        let mut s = spec("10.0.0.1", "10.0.0.2", Proto::Udp, 64);
        s.flows = 65538;
        s.sport = 1024;
        let t = Templates::build(&s).unwrap();
        assert_eq!(t.flows(), 65538);
        let mut out = vec![0u8; 128];
        let check = |flow: usize, out: &mut Vec<u8>, port: u16, src: [u8; 4]| {
            t.write(flow, Tag { seq: 7, tx_ns: 9 }, out);
            let (sport, _) = verify_plain(&out[..60]);
            assert_eq!(sport, port, "flow {flow}");
            assert_eq!(&out[26..30], &src, "flow {flow}");
        };
        check(0, &mut out, 1024, [10, 0, 0, 1]);
        check(1, &mut out, 1025, [10, 0, 0, 1]);
        check(65535, &mut out, 1023, [10, 0, 0, 1]);
        check(65536, &mut out, 1024, [10, 0, 0, 2]);
        check(65537, &mut out, 1025, [10, 0, 0, 2]);
    }

    #[test]
    fn vxlan_frames_carry_correct_inner_and_outer_headers() {
        let cases = [
            (
                "10.0.0.1",
                "10.0.0.2",
                Proto::Udp,
                64,
                "192.168.0.1",
                "192.168.0.2",
            ),
            (
                "10.0.0.1",
                "10.0.0.2",
                Proto::TcpSyn,
                1518,
                "192.168.0.1",
                "192.168.0.2",
            ),
            ("fd00::1", "fd00::2", Proto::Udp, 84, "fd01::1", "fd01::2"),
            (
                "10.0.0.1",
                "10.0.0.2",
                Proto::Udp,
                1518,
                "fd01::1",
                "fd01::2",
            ),
        ];
        for (src, dst, proto, size, osrc, odst) in cases {
            let s = vxlan(spec(src, dst, proto, size), osrc, odst);
            let t = Templates::build(&s).unwrap();
            let overhead = if osrc.contains(':') { 70 } else { 50 };
            assert_eq!(t.frame_len(), size - 4 + overhead);
            let mut out = vec![0u8; 2048];
            for tag in tags() {
                t.write(0, tag, &mut out);
                let frame = &out[..t.frame_len()];
                let outer = SlicedPacket::from_ethernet(frame).unwrap();
                let Some(TransportSlice::Udp(u)) = &outer.transport else {
                    panic!("outer UDP")
                };
                let h = u.to_header();
                assert_eq!(h.destination_port, 4789);
                assert!(h.source_port >= 49152);
                match &outer.net {
                    Some(NetSlice::Ipv4(ip)) => {
                        let ih = ip.header().to_header();
                        assert_eq!(ih.header_checksum, ih.calc_header_checksum());
                        assert_eq!(h.checksum, 0, "outer IPv4 UDP checksum is 0");
                    }
                    Some(NetSlice::Ipv6(ip)) => {
                        let ih = ip.header();
                        let expected = h
                            .calc_checksum_ipv6_raw(
                                ih.source_addr().octets(),
                                ih.destination_addr().octets(),
                                u.payload(),
                            )
                            .unwrap();
                        assert_eq!(h.checksum, expected, "outer IPv6 UDP checksum");
                    }
                    other => panic!("outer IP: {other:?}"),
                }
                let vx = u.payload();
                assert_eq!(vx[0], 0x08);
                assert_eq!(&vx[4..7], &[0x12, 0x34, 0x56], "VNI");
                let inner = &vx[8..];
                assert_eq!(inner.len(), size - 4);
                assert_eq!(&inner[0..6], &[2, 0, 0, 0, 0, 2]);
                let (_, payload) = verify_plain(inner);
                assert_eq!(Tag::parse(&payload), Some(tag));
                assert_eq!(parse_tag(frame), Some(Parsed { tag, vxlan: true }));
            }
        }
    }

    #[test]
    fn source_port_hash_is_stable_and_in_range() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p = vxlan_source_port(a, b, 17, 1024, 9);
        assert_eq!(p, vxlan_source_port(a, b, 17, 1024, 9));
        assert!(p >= 49152);
        let distinct: std::collections::HashSet<u16> = (0..100)
            .map(|i| vxlan_source_port(a, b, 17, 1024 + i, 9))
            .collect();
        assert!(distinct.len() > 90, "{}", distinct.len());
    }

    #[test]
    fn parser_handles_vlan_and_rejects_garbage_without_panicking() {
        let t = Templates::build(&spec("10.0.0.1", "10.0.0.2", Proto::Udp, 64)).unwrap();
        let mut out = vec![0u8; 64];
        let tag = Tag {
            seq: 42,
            tx_ns: 4242,
        };
        t.write(0, tag, &mut out);
        let frame = out[..60].to_vec();
        // One 802.1Q tag.
        let mut tagged = frame[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&frame[12..]);
        assert_eq!(parse_tag(&tagged).map(|p| p.tag), Some(tag));
        // Every truncation of the frame: no panic; the full tag needs all of 60 bytes.
        for len in 0..frame.len() {
            assert_eq!(parse_tag(&frame[..len]), None, "truncated to {len}");
        }
        // Wrong magic, wrong ethertype, a fragment.
        let mut bad = frame.clone();
        bad[42] ^= 0xff;
        assert_eq!(parse_tag(&bad), None);
        let mut bad = frame.clone();
        bad[12] = 0x08;
        bad[13] = 0x06;
        assert_eq!(parse_tag(&bad), None);
        let mut bad = frame.clone();
        bad[20] = 0x00;
        bad[21] = 0x10;
        assert_eq!(parse_tag(&bad), None);
        // Pseudo-random bytes, with plausible headers planted.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 200) as usize;
            let mut buf: Vec<u8> = (0..len).map(|j| (seed >> (j % 57)) as u8).collect();
            if i % 2 == 0 && len > 14 {
                buf[12..14].copy_from_slice(if i % 4 == 0 {
                    &[0x08, 0x00]
                } else {
                    &[0x86, 0xdd]
                });
            }
            let _ = parse_tag(&buf);
        }
    }
}
