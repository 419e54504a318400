//! ACL rules and their classifier (issue 6, first stage: the rule model, the packet
//! classifier and its place in the tables, `TableOp::SetAcl`; not yet applied by the
//! pipeline, nor configurable from the CLI).
//!
//! # Rules
//! An [`AclRule`] matches on source and destination prefixes, IP protocol, source and
//! destination port ranges (TCP, UDP, SCTP) or ICMP type and code, and has an action. A rule
//! set is ordered by `priority` (lower first), ties by position in the set: the first rule
//! that matches decides, so overlapping and contradictory rules resolve deterministically.
//! A rule without prefixes applies to both families; one with a prefix to that family only.
//! Packets without an L4 header (later fragments) match only rules without port or ICMP
//! constraints.
//!
//! # Classifier
//! [`Classifier`] compiles a rule set into a byte-wise decision automaton over the packet's
//! key (IPv4: 14 bytes: source, destination, protocol, an "L4 header present" byte, two
//! 16-bit L4 fields; IPv6: 38 bytes), in the spirit of DPDK's `rte_acl`: a lookup walks at
//! most one state per key byte, so its cost depends on the key length and on how many
//! transitions a state has, not on the number of rules. Fields no rule of the set constrains
//! are not read (a port policy rarely constrains the pod's own address), and a state with
//! more than 8 transitions gets a direct 256-entry table (others a binary search).
//! Measured (`vrouter-perf pipeline --scenario acl-10k`): 10,002 NetworkPolicy-like rules
//! classify in 73 ns against 52 ns for 12 rules (1.4x), compile in 42 ms into 54k states
//! (1.4 MiB). Every rule field is a
//! range of big-endian bytes (a prefix is the range of its addresses), and a state is the set
//! of rules still possible, each with whether the bytes so far sit on its lower and upper
//! bound. Build prunes a state as soon as its best remaining rule is certain to match
//! whatever the remaining bytes are, which keeps typical policies (many /32s, few wildcard
//! rules) to a state count near rules x key bytes. A rule set whose automaton would exceed
//! [`MAX_STATES`] is split in two by priority and compiled as two automata (a lookup takes
//! the better of their answers), so build time and memory stay bounded for adversarial sets.
//!
//! Contract: [`Classifier::classify`] returns exactly what [`classify_linear`] (a priority
//! ordered scan, the reference) returns, for every key (property-tested); building validates
//! every rule and never panics.

use crate::tables::IpPrefix;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AclAction {
    /// Let the packet (and its connection) through.
    Allow,
    /// Drop silently.
    Deny,
    /// Drop and answer: TCP reset, ICMP unreachable otherwise.
    Reject,
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRule {
    /// Evaluation order: lower first; ties by position in the set.
    pub priority: u32,
    /// Source prefix (`None`: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpPrefix>,
    /// Destination prefix (`None`: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpPrefix>,
    /// IP protocol number (`None`: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
    /// Source ports, inclusive (TCP, UDP, SCTP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ports: Option<(u16, u16)>,
    /// Destination ports, inclusive (TCP, UDP, SCTP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ports: Option<(u16, u16)>,
    /// ICMP/ICMPv6 type (protocol 1 or 58 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP/ICMPv6 code (needs `icmp_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// Action.
    pub action: AclAction,
}

/// Why a rule is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AclError {
    /// A port range with its low end above its high end.
    #[error("rule {0}: port range {1}-{2} is empty")]
    EmptyPortRange(usize, u16, u16),
    /// Ports on a protocol without ports.
    #[error("rule {0}: ports need protocol tcp (6), udp (17) or sctp (132)")]
    PortsWithoutPortProtocol(usize),
    /// ICMP fields on another protocol.
    #[error("rule {0}: icmp type/code need protocol icmp (1) or icmpv6 (58)")]
    IcmpWithoutIcmpProtocol(usize),
    /// A code without a type.
    #[error("rule {0}: icmp code needs an icmp type")]
    IcmpCodeWithoutType(usize),
    /// Source and destination of different families, or ICMP of the other family.
    #[error("rule {0}: mixes IPv4 and IPv6")]
    MixedFamilies(usize),
}

/// What classification looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AclKey {
    /// IPv6 packet.
    pub ipv6: bool,
    /// Source address (IPv4 in the low 32 bits).
    pub src: u128,
    /// Destination address.
    pub dst: u128,
    /// IP protocol.
    pub protocol: u8,
    /// The packet has its L4 header (false for later fragments).
    pub has_l4: bool,
    /// Source port, or ICMP type.
    pub l4_a: u16,
    /// Destination port, or ICMP code.
    pub l4_b: u16,
}

/// The decision for a key: the index of the rule in the set as given, and its action.
pub type Match = Option<(usize, AclAction)>;

/// States of one automaton beyond which the rule set is split.
pub const MAX_STATES: usize = 1 << 20;

const V6_LEN: usize = 16 + 16 + 1 + 1 + 2 + 2;

/// Field widths in key order.
fn fields(ipv6: bool) -> [usize; 6] {
    let a = if ipv6 { 16 } else { 4 };
    [a, a, 1, 1, 2, 2]
}

fn key_bytes(key: &AclKey, out: &mut [u8; V6_LEN]) -> usize {
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    if key.ipv6 {
        put(&key.src.to_be_bytes());
        put(&key.dst.to_be_bytes());
    } else {
        put(&(key.src as u32).to_be_bytes());
        put(&(key.dst as u32).to_be_bytes());
    }
    put(&[key.protocol, u8::from(key.has_l4)]);
    let (a, b) = if key.has_l4 {
        (key.l4_a, key.l4_b)
    } else {
        (0, 0)
    };
    put(&a.to_be_bytes());
    put(&b.to_be_bytes());
    at
}

fn is_port_protocol(p: u8) -> bool {
    matches!(p, 6 | 17 | 132)
}

/// Checks a rule (`index` is its position, for messages).
pub fn validate_rule(index: usize, rule: &AclRule) -> Result<(), AclError> {
    for (lo, hi) in [rule.src_ports, rule.dst_ports].into_iter().flatten() {
        if lo > hi {
            return Err(AclError::EmptyPortRange(index, lo, hi));
        }
    }
    if (rule.src_ports.is_some() || rule.dst_ports.is_some())
        && !rule.protocol.is_some_and(is_port_protocol)
    {
        return Err(AclError::PortsWithoutPortProtocol(index));
    }
    if rule.icmp_code.is_some() && rule.icmp_type.is_none() {
        return Err(AclError::IcmpCodeWithoutType(index));
    }
    if rule.icmp_type.is_some() && !matches!(rule.protocol, Some(1 | 58)) {
        return Err(AclError::IcmpWithoutIcmpProtocol(index));
    }
    let families: Vec<bool> = [rule.src, rule.dst]
        .into_iter()
        .flatten()
        .map(|p| matches!(p, IpPrefix::V6(_)))
        .chain(match rule.protocol {
            Some(1) if rule.icmp_type.is_some() => Some(false),
            Some(58) if rule.icmp_type.is_some() => Some(true),
            _ => None,
        })
        .collect();
    if families.windows(2).any(|w| w[0] != w[1]) {
        return Err(AclError::MixedFamilies(index));
    }
    Ok(())
}

/// Whether `rule` matches `key` (the reference semantics).
pub fn rule_matches(rule: &AclRule, key: &AclKey) -> bool {
    let addr = |value: u128| -> IpAddr {
        if key.ipv6 {
            IpAddr::V6(value.into())
        } else {
            IpAddr::V4((value as u32).into())
        }
    };
    let prefix_ok = |prefix: &Option<IpPrefix>, value: u128| match prefix {
        None => true,
        Some(p) => match (p, addr(value)) {
            (IpPrefix::V4(p), IpAddr::V4(a)) => p.contains(a),
            (IpPrefix::V6(p), IpAddr::V6(a)) => p.contains(a),
            _ => false,
        },
    };
    let family_ok = match (rule.protocol, rule.icmp_type) {
        (Some(1), Some(_)) => !key.ipv6,
        (Some(58), Some(_)) => key.ipv6,
        _ => true,
    };
    let in_range =
        |range: Option<(u16, u16)>, v: u16| range.is_none_or(|(lo, hi)| lo <= v && v <= hi);
    let l4_constrained =
        rule.src_ports.is_some() || rule.dst_ports.is_some() || rule.icmp_type.is_some();
    family_ok
        && prefix_ok(&rule.src, key.src)
        && prefix_ok(&rule.dst, key.dst)
        && rule.protocol.is_none_or(|p| p == key.protocol)
        && (!l4_constrained
            || (key.has_l4
                && in_range(rule.src_ports, key.l4_a)
                && in_range(rule.dst_ports, key.l4_b)
                && rule.icmp_type.is_none_or(|t| u16::from(t) == key.l4_a)
                && rule.icmp_code.is_none_or(|c| u16::from(c) == key.l4_b)))
}

/// The reference classifier: the first rule in (priority, position) order that matches.
pub fn classify_linear(rules: &[AclRule], key: &AclKey) -> Match {
    let mut best: Option<(u32, usize)> = None;
    for (i, rule) in rules.iter().enumerate() {
        if rule_matches(rule, key) && best.is_none_or(|(p, _)| rule.priority < p) {
            best = Some((rule.priority, i));
        }
    }
    best.map(|(_, i)| (i, rules[i].action))
}

/// A rule's bounds over the key bytes of one family (`None`: not of this family).
fn bounds(rule: &AclRule, ipv6: bool) -> Option<(Vec<u8>, Vec<u8>)> {
    let family_ok = |p: &IpPrefix| matches!(p, IpPrefix::V6(_)) == ipv6;
    if rule.src.is_some_and(|p| !family_ok(&p)) || rule.dst.is_some_and(|p| !family_ok(&p)) {
        return None;
    }
    match (rule.protocol, rule.icmp_type) {
        (Some(1), Some(_)) if ipv6 => return None,
        (Some(58), Some(_)) if !ipv6 => return None,
        _ => {}
    }
    let width = if ipv6 { 16 } else { 4 };
    let mut lo = Vec::with_capacity(V6_LEN);
    let mut hi = Vec::with_capacity(V6_LEN);
    for prefix in [rule.src, rule.dst] {
        let (l, h): (u128, u128) = match prefix {
            None if ipv6 => (0, u128::MAX),
            None => (0, u32::MAX as u128),
            Some(IpPrefix::V4(p)) => (p.bits() as u128, (p.bits() | !p.mask()) as u128),
            Some(IpPrefix::V6(p)) => (p.bits(), p.bits() | !p.mask()),
        };
        lo.extend_from_slice(&l.to_be_bytes()[16 - width..]);
        hi.extend_from_slice(&h.to_be_bytes()[16 - width..]);
    }
    let (plo, phi) = rule.protocol.map_or((0, 255), |p| (p, p));
    lo.push(plo);
    hi.push(phi);
    let l4 = rule.src_ports.is_some() || rule.dst_ports.is_some() || rule.icmp_type.is_some();
    lo.push(u8::from(l4));
    hi.push(1);
    let (a, b) = if rule.icmp_type.is_some() {
        let t = rule.icmp_type.map(u16::from).map(|t| (t, t));
        let c = rule.icmp_code.map(u16::from).map(|c| (c, c));
        (t, c)
    } else {
        (rule.src_ports, rule.dst_ports)
    };
    for range in [a, b] {
        let (l, h) = range.unwrap_or((0, u16::MAX));
        lo.extend_from_slice(&l.to_be_bytes());
        hi.extend_from_slice(&h.to_be_bytes());
    }
    Some((lo, hi))
}

/// Flags of a rule in a state: the bytes of the current field so far equal its lower (bit 0)
/// or upper (bit 1) bound.
const TIGHT_LO: u8 = 1;
const TIGHT_HI: u8 = 2;

/// One automaton: states with their transitions, for one family and a subset of the rules.
#[derive(Clone, Debug)]
struct Automaton {
    /// Per state: `Ok(first run)` for an inner state (runs up to the next state's first),
    /// `Err(result)` for a terminal one (`u32::MAX`: no rule).
    states: Vec<StateEntry>,
    /// Transition runs: the first byte value of the run and the next state.
    run_starts: Vec<u8>,
    run_next: Vec<u32>,
    /// 256-entry next-state tables of states with many runs.
    dense: Vec<u32>,
    /// Rank (position in priority order) to the caller's rule index.
    ranks: Vec<u32>,
    /// Offsets in the full key of the bytes this automaton reads: fields no rule constrains
    /// are not read at all.
    positions: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
enum StateEntry {
    /// Few transitions: binary search in the runs.
    Inner {
        first: u32,
        count: u16,
    },
    /// Many: a direct table.
    Dense {
        table: u32,
    },
    Terminal(u32),
}

/// Runs beyond which a state gets a direct 256-entry table (1 KiB).
const DENSE_RUNS: usize = 8;

const NO_RULE: u32 = u32::MAX;

/// Build-time view of the rules of one automaton, in priority order.
struct BuildRules {
    lo: Vec<Vec<u8>>,
    hi: Vec<Vec<u8>>,
    /// `lo[r][k..field end]` all zero / `hi[r][k..field end]` all 0xff.
    lo_rest_zero: Vec<Vec<bool>>,
    hi_rest_ff: Vec<Vec<bool>>,
    /// Every field from the one starting at field index f on is a full wildcard.
    wild_from: Vec<Vec<bool>>,
    field_of: Vec<usize>,
    field_end: Vec<usize>,
    len: usize,
}

impl BuildRules {
    fn new(bounds: Vec<(Vec<u8>, Vec<u8>)>, widths: &[usize]) -> Self {
        let len: usize = widths.iter().sum();
        let mut field_of = Vec::with_capacity(len);
        let mut field_end = Vec::with_capacity(len);
        let mut at = 0;
        for (f, w) in widths.iter().enumerate() {
            for _ in 0..*w {
                field_of.push(f);
                field_end.push(at + w);
            }
            at += w;
        }
        let mut lo_rest_zero = Vec::new();
        let mut hi_rest_ff = Vec::new();
        let mut wild_from = Vec::new();
        for (lo, hi) in &bounds {
            let mut lz = vec![true; len + 1];
            let mut hf = vec![true; len + 1];
            for k in (0..len).rev() {
                let same_field = k + 1 < field_end[k];
                lz[k] = lo[k] == 0 && (!same_field || lz[k + 1]);
                hf[k] = hi[k] == 0xff && (!same_field || hf[k + 1]);
            }
            let mut wf = vec![true; widths.len() + 1];
            let mut start = len;
            for f in (0..widths.len()).rev() {
                start -= widths[f];
                wf[f] = wf[f + 1] && lz[start] && hf[start];
            }
            lo_rest_zero.push(lz);
            hi_rest_ff.push(hf);
            wild_from.push(wf);
        }
        let (lo, hi) = bounds.into_iter().unzip();
        BuildRules {
            lo,
            hi,
            lo_rest_zero,
            hi_rest_ff,
            wild_from,
            field_of,
            field_end,
            len,
        }
    }

    /// Whether rule `r` with `flags` at byte `k` matches whatever bytes `k..` are.
    fn certain(&self, r: usize, flags: u8, k: usize) -> bool {
        if k >= self.len {
            return true;
        }
        (flags & TIGHT_LO == 0 || self.lo_rest_zero[r][k])
            && (flags & TIGHT_HI == 0 || self.hi_rest_ff[r][k])
            && self.wild_from[r][self.field_of[k] + 1]
    }
}

type StateSet = Vec<(u32, u8)>;

impl Automaton {
    /// Builds for `rules` (rank order; `ranks[i]` is the caller's index of rule i). `None`
    /// when the state count passes `max_states`.
    fn build(
        bounds: Vec<(Vec<u8>, Vec<u8>)>,
        ranks: Vec<u32>,
        ipv6: bool,
        max_states: usize,
    ) -> Option<Automaton> {
        // Keep only the fields some rule constrains.
        let widths = fields(ipv6);
        let mut positions = Vec::new();
        let mut used = Vec::new();
        let mut at = 0;
        for &w in &widths {
            let constrained = bounds.iter().any(|(lo, hi)| {
                lo[at..at + w].iter().any(|b| *b != 0) || hi[at..at + w].iter().any(|b| *b != 0xff)
            });
            if constrained {
                positions.extend((at..at + w).map(|p| p as u8));
                used.push(w);
            }
            at += w;
        }
        let bounds = bounds
            .into_iter()
            .map(|(lo, hi)| {
                (
                    positions.iter().map(|&p| lo[p as usize]).collect(),
                    positions.iter().map(|&p| hi[p as usize]).collect(),
                )
            })
            .collect();
        let rules = BuildRules::new(bounds, &used);
        let mut automaton = Automaton {
            states: Vec::new(),
            run_starts: Vec::new(),
            run_next: Vec::new(),
            dense: Vec::new(),
            ranks,
            positions,
        };
        let mut ids: HashMap<(usize, StateSet), u32> = HashMap::new();
        let mut queue: Vec<(usize, StateSet)> = Vec::new();
        let root: StateSet = (0..rules.lo.len() as u32)
            .map(|r| (r, TIGHT_LO | TIGHT_HI))
            .collect();
        let root = Self::prune(&rules, root, 0);
        ids.insert((0, root.clone()), 0);
        automaton.states.push(StateEntry::Terminal(NO_RULE));
        queue.push((0, root));
        let mut next_index = 0;
        while next_index < queue.len() {
            let (k, set) = queue[next_index].clone();
            let id = next_index;
            next_index += 1;
            // Terminal: nothing left, the best rule is certain, or the key is consumed.
            let terminal = match set.first() {
                None => Some(NO_RULE),
                Some(&(r, flags)) if rules.certain(r as usize, flags, k) => Some(r),
                _ => None,
            };
            if let Some(result) = terminal {
                automaton.states[id] = StateEntry::Terminal(result);
                continue;
            }
            let first = automaton.run_starts.len() as u32;
            let mut points: Vec<u16> = vec![0];
            for &(r, flags) in &set {
                let (lo, hi) = (rules.lo[r as usize][k], rules.hi[r as usize][k]);
                let a = if flags & TIGHT_LO != 0 { lo } else { 0 };
                let b = if flags & TIGHT_HI != 0 { hi } else { 255 };
                points.extend([a as u16, b as u16 + 1, lo as u16, lo as u16 + 1]);
                points.extend([hi as u16, hi as u16 + 1]);
            }
            points.sort_unstable();
            points.dedup();
            points.retain(|p| *p <= 255);
            let field_starts_next = k + 1 < rules.len && rules.field_end[k] == k + 1;
            let mut last_next: Option<u32> = None;
            for (i, &start) in points.iter().enumerate() {
                let end = points.get(i + 1).map_or(255, |p| p - 1);
                let (v_lo, v_hi) = (start as u8, end as u8);
                let mut next: StateSet = Vec::new();
                for &(r, flags) in &set {
                    let (lo, hi) = (rules.lo[r as usize][k], rules.hi[r as usize][k]);
                    let a = if flags & TIGHT_LO != 0 { lo } else { 0 };
                    let b = if flags & TIGHT_HI != 0 { hi } else { 255 };
                    if v_lo < a || v_hi > b {
                        continue;
                    }
                    let new_flags = if field_starts_next {
                        TIGHT_LO | TIGHT_HI
                    } else {
                        // Elementary intervals never straddle a bound: v_lo == v_hi there.
                        let mut f = 0;
                        if flags & TIGHT_LO != 0 && v_lo == lo && v_hi == lo {
                            f |= TIGHT_LO;
                        }
                        if flags & TIGHT_HI != 0 && v_lo == hi && v_hi == hi {
                            f |= TIGHT_HI;
                        }
                        f
                    };
                    next.push((r, new_flags));
                }
                let next = Self::prune(&rules, next, k + 1);
                let key = (k + 1, next);
                let next_id = match ids.get(&key) {
                    Some(&id) => id,
                    None => {
                        let id = automaton.states.len() as u32;
                        if automaton.states.len() >= max_states {
                            return None;
                        }
                        automaton.states.push(StateEntry::Terminal(NO_RULE));
                        ids.insert(key.clone(), id);
                        queue.push(key);
                        id
                    }
                };
                if last_next != Some(next_id) {
                    automaton.run_starts.push(v_lo);
                    automaton.run_next.push(next_id);
                    last_next = Some(next_id);
                }
            }
            let count = automaton.run_starts.len() - first as usize;
            automaton.states[id] = if count > DENSE_RUNS {
                // Expand the runs into a direct table and drop them.
                let table = automaton.dense.len() as u32;
                let starts = automaton.run_starts.split_off(first as usize);
                let nexts = automaton.run_next.split_off(first as usize);
                for (i, &start) in starts.iter().enumerate() {
                    let end = starts.get(i + 1).map_or(256, |&s| s as usize);
                    for _ in start as usize..end {
                        automaton.dense.push(nexts[i]);
                    }
                }
                StateEntry::Dense { table }
            } else {
                StateEntry::Inner {
                    first,
                    count: count as u16,
                }
            };
        }
        Some(automaton)
    }

    /// Drops every rule after the first one certain to match from here on.
    fn prune(rules: &BuildRules, mut set: StateSet, k: usize) -> StateSet {
        if let Some(cut) = set
            .iter()
            .position(|&(r, flags)| rules.certain(r as usize, flags, k))
        {
            set.truncate(cut + 1);
        }
        set
    }

    /// The rank of the matching rule, or `NO_RULE`.
    #[inline]
    fn lookup(&self, key: &[u8; V6_LEN]) -> u32 {
        let mut state = 0usize;
        for &position in &self.positions {
            let byte = key[position as usize];
            let next = match self.states[state] {
                StateEntry::Terminal(result) => return result,
                StateEntry::Dense { table } => self.dense[table as usize + byte as usize],
                StateEntry::Inner { first, count } => {
                    let runs = &self.run_starts[first as usize..first as usize + count as usize];
                    let at = runs
                        .partition_point(|&start| start <= byte)
                        .saturating_sub(1);
                    self.run_next[first as usize + at]
                }
            };
            state = next as usize;
        }
        match self.states[state] {
            StateEntry::Terminal(result) => result,
            StateEntry::Inner { .. } | StateEntry::Dense { .. } => NO_RULE,
        }
    }

    fn memory_bytes(&self) -> usize {
        self.states.len() * std::mem::size_of::<StateEntry>()
            + self.run_starts.len() * (1 + 4)
            + self.dense.len() * 4
            + self.ranks.len() * 4
            + self.positions.len()
    }
}

/// A compiled rule set.
#[derive(Clone, Debug)]
pub struct Classifier {
    v4: Vec<Automaton>,
    v6: Vec<Automaton>,
    /// Actions by caller's index.
    actions: Vec<AclAction>,
    /// Rank (position in (priority, position) order) by caller's index.
    rank: Vec<u32>,
}

impl Classifier {
    /// Compiles `rules` (validated first).
    pub fn build(rules: &[AclRule]) -> Result<Classifier, AclError> {
        Self::build_with_limit(rules, MAX_STATES)
    }

    /// [`Classifier::build`] with another state limit per automaton (tests use small ones to
    /// exercise the split).
    pub fn build_with_limit(rules: &[AclRule], max_states: usize) -> Result<Classifier, AclError> {
        for (i, rule) in rules.iter().enumerate() {
            validate_rule(i, rule)?;
        }
        let mut order: Vec<u32> = (0..rules.len() as u32).collect();
        order.sort_by_key(|&i| (rules[i as usize].priority, i));
        let build_family = |ipv6: bool| {
            let mut family = Vec::new();
            let mut ranks = Vec::new();
            for &i in &order {
                if let Some(b) = bounds(&rules[i as usize], ipv6) {
                    family.push(b);
                    ranks.push(i);
                }
            }
            build_split(family, ranks, ipv6, max_states.max(16))
        };
        let mut rank = vec![0u32; rules.len()];
        for (position, &index) in order.iter().enumerate() {
            rank[index as usize] = position as u32;
        }
        Ok(Classifier {
            v4: build_family(false),
            v6: build_family(true),
            actions: rules.iter().map(|r| r.action).collect(),
            rank,
        })
    }

    /// The first rule (priority order) matching `key`.
    #[inline]
    pub fn classify(&self, key: &AclKey) -> Match {
        let mut bytes = [0u8; V6_LEN];
        key_bytes(key, &mut bytes);
        let automata = if key.ipv6 { &self.v6 } else { &self.v4 };
        let mut best: Option<u32> = None;
        for automaton in automata {
            let rank = automaton.lookup(&bytes);
            if rank != NO_RULE {
                let index = automaton.ranks[rank as usize];
                // Automata hold disjoint, priority-ordered slices of the rules: compare by
                // position in the global order.
                if best.is_none_or(|b| self.rank[index as usize] < self.rank[b as usize]) {
                    best = Some(index);
                }
            }
        }
        best.map(|i| (i as usize, self.actions[i as usize]))
    }

    /// Automata per family (1 unless a rule set was split).
    pub fn automata(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    /// States over all automata.
    pub fn states(&self) -> usize {
        self.v4.iter().chain(&self.v6).map(|a| a.states.len()).sum()
    }

    /// Heap bytes.
    pub fn memory_bytes(&self) -> usize {
        self.v4
            .iter()
            .chain(&self.v6)
            .map(Automaton::memory_bytes)
            .sum::<usize>()
            + self.actions.len()
            + self.rank.len() * 4
    }
}

/// Builds one automaton for the rules, or splits them in two (by priority) when it would pass
/// the state limit.
fn build_split(
    bounds: Vec<(Vec<u8>, Vec<u8>)>,
    ranks: Vec<u32>,
    ipv6: bool,
    max_states: usize,
) -> Vec<Automaton> {
    if let Some(a) = Automaton::build(bounds.clone(), ranks.clone(), ipv6, max_states) {
        return vec![a];
    }
    if bounds.len() <= 1 {
        // A single rule never needs more than a state per key byte and two per field edge.
        return Automaton::build(bounds, ranks, ipv6, usize::MAX)
            .into_iter()
            .collect();
    }
    let half = bounds.len() / 2;
    let (b1, b2) = (bounds[..half].to_vec(), bounds[half..].to_vec());
    let (r1, r2) = (ranks[..half].to_vec(), ranks[half..].to_vec());
    let mut out = build_split(b1, r1, ipv6, max_states);
    out.extend(build_split(b2, r2, ipv6, max_states));
    out
}
