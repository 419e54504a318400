//! Tests of the LPM tables: fixed scenarios, parsing, and property tests against a naive
//! reference (a list of routes, longest match by scan).

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::poptrie::Tuning;
use super::*;

fn p4(s: &str) -> Ipv4Prefix {
    s.parse().unwrap()
}

fn p6(s: &str) -> Ipv6Prefix {
    s.parse().unwrap()
}

fn a4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Every root stride, fixed, plus automatic strides with tiny thresholds so that small route
/// sets go through the rebuilds between strides; batched lookups both plain and pipelined.
fn tunings() -> Vec<Tuning> {
    let mut all = proptest_tunings();
    all.push(Tuning {
        fixed_stride: Some(18),
        ..Tuning::DEFAULT
    });
    all.push(Tuning {
        fixed_stride: None,
        promote: [3, 6],
        demote: [2, 4],
        cache_resident: 0,
    });
    all
}

/// The tunings of the property tests: strides 6 and 12, rebuilds between them at tiny sizes,
/// and the pipelined batch lookup (`cache_resident: 0`) as well as the plain one. Stride 18
/// runs the same code with a 1 MiB root, which is slow to allocate hundreds of times in
/// unoptimized test builds; the fixed-scenario tests and
/// `grow_and_shrink_through_every_root_stride` cover it.
fn proptest_tunings() -> Vec<Tuning> {
    vec![
        Tuning {
            fixed_stride: Some(6),
            ..Tuning::DEFAULT
        },
        Tuning {
            fixed_stride: Some(12),
            cache_resident: 0,
            ..Tuning::DEFAULT
        },
        Tuning {
            fixed_stride: None,
            promote: [3, usize::MAX],
            demote: [2, 0],
            cache_resident: 0,
        },
    ]
}

// ------------------------------------------------------------------ prefixes

#[test]
fn prefix_parse_and_display() {
    let p = p4("10.1.0.0/16");
    assert_eq!(p.network(), a4("10.1.0.0"));
    assert_eq!(p.len(), 16);
    assert_eq!(p.to_string(), "10.1.0.0/16");
    assert_eq!(format!("{p:?}"), "10.1.0.0/16");
    assert_eq!(p4("0.0.0.0/0").len(), 0);
    assert_eq!(p4("1.2.3.4"), p4("1.2.3.4/32"));
    assert_eq!(p6("2001:db8::/32").to_string(), "2001:db8::/32");
    assert_eq!(p6("::/0").len(), 0);
    assert_eq!(p6("2001:db8::1"), p6("2001:db8::1/128"));
}

#[test]
fn prefix_parse_errors() {
    assert!(matches!(
        "10.1.2.0/16".parse::<Ipv4Prefix>(),
        Err(LpmError::HostBitsSet { len: 16, .. })
    ));
    assert!(matches!(
        "10.0.0.0/33".parse::<Ipv4Prefix>(),
        Err(LpmError::BadPrefixLength { len: 33, max: 32 })
    ));
    assert!(matches!(
        "10.0.0.0/300".parse::<Ipv4Prefix>(),
        Err(LpmError::BadPrefixLength { len: 300, max: 32 })
    ));
    assert!(matches!(
        "::/129".parse::<Ipv6Prefix>(),
        Err(LpmError::BadPrefixLength { len: 129, max: 128 })
    ));
    assert!(matches!(
        "2001:db8::1/64".parse::<Ipv6Prefix>(),
        Err(LpmError::HostBitsSet { .. })
    ));
    for bad in [
        "",
        "/",
        "/8",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "10.0.0.0/-1",
        "10.0.0.0/ 8",
        "10.0.0.0/8 ",
        "10.0.0.0/1000",
        "10.0.0.0/8/8",
        "10.0.0/8",
        "10.0.0.256/32",
        "010.0.0.0/8",
        "::/8",
        "hello",
        "10.0.0.0\\8",
        "10.0.0.0/٨",
    ] {
        assert!(bad.parse::<Ipv4Prefix>().is_err(), "{bad:?} parsed as IPv4");
    }
    for bad in [
        "",
        "::/",
        "::1/1280",
        "10.0.0.0/8",
        "2001:db8::/x",
        ":::/0",
        "2001:db8::/32/",
    ] {
        assert!(bad.parse::<Ipv6Prefix>().is_err(), "{bad:?} parsed as IPv6");
    }
    assert!(Ipv4Prefix::new(a4("10.0.0.1"), 31).is_err());
    assert!(Ipv4Prefix::new(a4("0.0.0.0"), 33).is_err());
    assert!(Ipv6Prefix::new(Ipv6Addr::UNSPECIFIED, 129).is_err());
    // The error message says what was wrong.
    let err = "10.1.2.0/16".parse::<Ipv4Prefix>().unwrap_err().to_string();
    assert!(err.contains("10.1.0.0/16"), "{err}");
}

#[test]
fn prefix_helpers() {
    let p = p4("192.168.0.0/23");
    assert!(p.contains(a4("192.168.1.255")));
    assert!(!p.contains(a4("192.168.2.0")));
    assert!(p4("0.0.0.0/0").contains(a4("255.255.255.255")));
    assert!(p4("10.0.0.0/8").covers(&p4("10.1.0.0/16")));
    assert!(!p4("10.1.0.0/16").covers(&p4("10.0.0.0/8")));
    assert_eq!(p.mask(), 0xffff_fe00);
    assert_eq!(p4("0.0.0.0/0").mask(), 0);
    assert_eq!(
        Ipv4Prefix::truncating(a4("10.1.2.3"), 16).unwrap(),
        p4("10.1.0.0/16")
    );
    assert_eq!(Ipv4Prefix::host(a4("10.1.2.3")), p4("10.1.2.3/32"));
    assert!(p6("2001:db8::/32").contains(a6("2001:db8:ffff::1")));
    assert!(!p6("2001:db8::/32").contains(a6("2001:db9::")));
    assert!(p6("::/0").contains(a6("ffff::")));
    // Ord: by address, then length.
    let mut v = vec![
        p4("10.1.0.0/16"),
        p4("10.0.0.0/16"),
        p4("10.0.0.0/8"),
        p4("9.0.0.0/8"),
    ];
    v.sort();
    assert_eq!(
        v,
        vec![
            p4("9.0.0.0/8"),
            p4("10.0.0.0/8"),
            p4("10.0.0.0/16"),
            p4("10.1.0.0/16")
        ]
    );
}

#[test]
fn prefix_serde_is_the_string_form() {
    use serde::de::value::{Error, StrDeserializer};
    use serde::de::IntoDeserializer;
    use serde::Deserialize;
    let de: StrDeserializer<'_, Error> = "10.1.0.0/16".into_deserializer();
    assert_eq!(Ipv4Prefix::deserialize(de).unwrap(), p4("10.1.0.0/16"));
    let de: StrDeserializer<'_, Error> = "10.1.0.1/16".into_deserializer();
    assert!(Ipv4Prefix::deserialize(de).is_err());
    let de: StrDeserializer<'_, Error> = "2001:db8::/32".into_deserializer();
    assert_eq!(Ipv6Prefix::deserialize(de).unwrap(), p6("2001:db8::/32"));
}

// ------------------------------------------------------------------ tables, fixed scenarios

#[test]
fn empty_table() {
    let t = Ipv4Lpm::new();
    assert!(t.is_empty());
    assert_eq!(t.lookup(a4("1.2.3.4")), None);
    assert_eq!(t.get(p4("0.0.0.0/0")), None);
    assert_eq!(t.iter().count(), 0);
    let t = Ipv6Lpm::new();
    assert_eq!(t.lookup(a6("::1")), None);
}

#[test]
fn overlapping_insert_remove_v4() {
    for tuning in tunings() {
        let mut t = Ipv4Lpm::with_tuning(tuning);
        assert_eq!(t.insert(p4("10.0.0.0/8"), 8).unwrap(), None);
        assert_eq!(t.insert(p4("10.1.0.0/16"), 16).unwrap(), None);
        assert_eq!(t.insert(p4("10.1.1.0/24"), 24).unwrap(), None);
        assert_eq!(t.insert(p4("10.1.1.128/25"), 25).unwrap(), None);
        t.check_invariants();
        assert_eq!(t.lookup(a4("10.2.0.1")), Some(8));
        assert_eq!(t.lookup(a4("10.1.2.1")), Some(16));
        assert_eq!(t.lookup(a4("10.1.1.1")), Some(24));
        assert_eq!(t.lookup(a4("10.1.1.200")), Some(25));
        assert_eq!(t.lookup(a4("11.0.0.0")), None);
        // Removing the /16 re-exposes the /8 where the /16 was, not inside the /24.
        assert_eq!(t.remove(p4("10.1.0.0/16")), Some(16));
        t.check_invariants();
        assert_eq!(t.lookup(a4("10.1.2.1")), Some(8));
        assert_eq!(t.lookup(a4("10.1.255.255")), Some(8));
        assert_eq!(t.lookup(a4("10.1.1.1")), Some(24));
        assert_eq!(t.lookup(a4("10.1.1.200")), Some(25));
        // Put it back with another value, then replace the value.
        assert_eq!(t.insert(p4("10.1.0.0/16"), 160).unwrap(), None);
        assert_eq!(t.insert(p4("10.1.0.0/16"), 161).unwrap(), Some(160));
        assert_eq!(t.lookup(a4("10.1.2.1")), Some(161));
        assert_eq!(t.get(p4("10.1.0.0/16")), Some(161));
        assert_eq!(t.get(p4("10.1.0.0/17")), None);
        // Removing the /8 leaves everything outside the /16 unrouted.
        assert_eq!(t.remove(p4("10.0.0.0/8")), Some(8));
        assert_eq!(t.remove(p4("10.0.0.0/8")), None);
        assert_eq!(t.lookup(a4("10.2.0.1")), None);
        assert_eq!(t.lookup(a4("10.1.2.1")), Some(161));
        t.check_invariants();
        // Remove the more specific routes; the /16 shows through.
        assert_eq!(t.remove(p4("10.1.1.128/25")), Some(25));
        assert_eq!(t.lookup(a4("10.1.1.200")), Some(24));
        assert_eq!(t.remove(p4("10.1.1.0/24")), Some(24));
        assert_eq!(t.lookup(a4("10.1.1.200")), Some(161));
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove(p4("10.1.0.0/16")), Some(161));
        assert!(t.is_empty());
        assert_eq!(t.lookup(a4("10.1.1.200")), None);
        t.check_invariants();
    }
}

#[test]
fn default_and_host_routes_v4() {
    for tuning in tunings() {
        let mut t = Ipv4Lpm::with_tuning(tuning);
        t.insert(p4("0.0.0.0/0"), 1).unwrap();
        t.insert(p4("255.255.255.255/32"), 2).unwrap();
        t.insert(p4("0.0.0.0/32"), 3).unwrap();
        t.insert(p4("10.0.0.1/32"), 4).unwrap();
        t.insert(p4("10.0.0.0/31"), 5).unwrap();
        t.check_invariants();
        assert_eq!(t.lookup(a4("255.255.255.255")), Some(2));
        assert_eq!(t.lookup(a4("255.255.255.254")), Some(1));
        assert_eq!(t.lookup(a4("0.0.0.0")), Some(3));
        assert_eq!(t.lookup(a4("0.0.0.1")), Some(1));
        assert_eq!(t.lookup(a4("10.0.0.1")), Some(4));
        assert_eq!(t.lookup(a4("10.0.0.0")), Some(5));
        assert_eq!(t.lookup(a4("10.0.0.2")), Some(1));
        assert_eq!(t.lookup(a4("123.45.67.89")), Some(1));
        assert_eq!(t.remove(p4("0.0.0.0/0")), Some(1));
        assert_eq!(t.lookup(a4("123.45.67.89")), None);
        assert_eq!(t.lookup(a4("255.255.255.255")), Some(2));
        assert_eq!(t.lookup(a4("10.0.0.1")), Some(4));
        t.check_invariants();
        let routes: Vec<_> = t.iter().collect();
        assert_eq!(
            routes,
            vec![
                (p4("0.0.0.0/32"), 3),
                (p4("10.0.0.0/31"), 5),
                (p4("10.0.0.1/32"), 4),
                (p4("255.255.255.255/32"), 2)
            ]
        );
    }
}

#[test]
fn default_and_host_routes_v6() {
    for tuning in tunings() {
        let mut t = Ipv6Lpm::with_tuning(tuning);
        t.insert(p6("::/0"), 1).unwrap();
        t.insert(p6("2001:db8::/32"), 2).unwrap();
        t.insert(p6("2001:db8::1/128"), 3).unwrap();
        t.insert(p6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), 4)
            .unwrap();
        t.insert(p6("2001:db8:0:1::/64"), 5).unwrap();
        t.insert(p6("::/128"), 6).unwrap();
        t.check_invariants();
        assert_eq!(t.lookup(a6("2001:db8::1")), Some(3));
        assert_eq!(t.lookup(a6("2001:db8::2")), Some(2));
        assert_eq!(t.lookup(a6("2001:db8:0:1::2")), Some(5));
        assert_eq!(
            t.lookup(a6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some(4)
        );
        assert_eq!(
            t.lookup(a6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")),
            Some(1)
        );
        assert_eq!(t.lookup(a6("::")), Some(6));
        assert_eq!(t.lookup(a6("::1")), Some(1));
        assert_eq!(t.remove(p6("2001:db8::/32")), Some(2));
        assert_eq!(t.lookup(a6("2001:db8::2")), Some(1));
        assert_eq!(t.lookup(a6("2001:db8::1")), Some(3));
        assert_eq!(t.remove(p6("::/0")), Some(1));
        assert_eq!(t.lookup(a6("2001:db8::2")), None);
        assert_eq!(t.lookup_u128(u128::from(a6("2001:db8:0:1::2"))), Some(5));
        assert_eq!(t.len(), 4);
        t.check_invariants();
        for (p, _) in t.clone().iter() {
            t.remove(p).unwrap();
        }
        assert!(t.is_empty());
        t.check_invariants();
    }
}

#[test]
fn lookup_batch_handles_any_slice_lengths() {
    for tuning in tunings() {
        let mut t = Ipv4Lpm::with_tuning(tuning);
        t.insert(p4("10.0.0.0/8"), 1).unwrap();
        t.insert(p4("10.1.2.3/32"), 2).unwrap();
        let addrs: Vec<u32> = ["10.1.2.3", "10.9.9.9", "11.0.0.0"]
            .iter()
            .map(|a| u32::from(a4(a)))
            .collect();
        // Shorter output: only that many lookups.
        let mut out = [Some(99); 2];
        t.lookup_batch(&addrs, &mut out);
        assert_eq!(out, [Some(2), Some(1)]);
        // Longer output: the rest is left alone.
        let mut out = [Some(99); 5];
        t.lookup_batch(&addrs, &mut out);
        assert_eq!(out, [Some(2), Some(1), None, Some(99), Some(99)]);
        t.lookup_batch(&[], &mut out);
        t.lookup_batch(&addrs, &mut []);
        // Batches longer than the pipeline's lanes.
        let many: Vec<u32> = (0..1000u32).map(|i| 0x0a01_0200 + i % 7).collect();
        let mut out = vec![None; many.len()];
        t.lookup_batch(&many, &mut out);
        for (a, o) in many.iter().zip(&out) {
            assert_eq!(*o, t.lookup_u32(*a));
        }
    }
}

#[test]
fn reserved_value_is_rejected() {
    let mut t = Ipv4Lpm::new();
    assert_eq!(
        t.insert(p4("10.0.0.0/8"), RESERVED_VALUE),
        Err(LpmError::ReservedValue)
    );
    assert!(t.is_empty());
    assert_eq!(
        t.insert(p4("10.0.0.0/8"), RESERVED_VALUE - 1).unwrap(),
        None
    );
    assert_eq!(t.lookup(a4("10.0.0.1")), Some(RESERVED_VALUE - 1));
    let mut t = Ipv6Lpm::new();
    assert_eq!(
        t.insert(p6("::/0"), RESERVED_VALUE),
        Err(LpmError::ReservedValue)
    );
    assert_eq!(t.insert(p6("::/0"), 0).unwrap(), None);
    assert_eq!(t.lookup(a6("::1")), Some(0));
}

#[test]
fn clone_is_independent() {
    let mut a = Ipv4Lpm::new();
    a.insert(p4("10.0.0.0/8"), 1).unwrap();
    let b = a.clone();
    a.insert(p4("10.1.0.0/16"), 2).unwrap();
    a.remove(p4("10.0.0.0/8"));
    assert_eq!(b.lookup(a4("10.1.0.1")), Some(1));
    assert_eq!(a.lookup(a4("10.1.0.1")), Some(2));
    assert_eq!(a.lookup(a4("10.2.0.1")), None);
    b.check_invariants();
    a.check_invariants();
}

#[test]
fn small_tables_are_small() {
    let mut t = Ipv4Lpm::new();
    for i in 0..10u32 {
        t.insert(
            Ipv4Prefix::truncating(Ipv4Addr::from(i.wrapping_mul(0x9e37_79b9)), 24).unwrap(),
            i,
        )
        .unwrap();
    }
    assert!(t.memory_bytes() <= 64 * 1024, "{} bytes", t.memory_bytes());
    let mut t = Ipv6Lpm::new();
    for i in 0..10u128 {
        let addr =
            Ipv6Addr::from(0x2001_0db8u128 << 96 | i.wrapping_mul(0x9e37_79b9_7f4a_7c15) << 64);
        t.insert(Ipv6Prefix::truncating(addr, 64).unwrap(), 1)
            .unwrap();
    }
    assert!(t.memory_bytes() <= 64 * 1024, "{} bytes", t.memory_bytes());
}

/// Splitmix64, for deterministic pseudo-random tests without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Grows past both root-stride promotions and shrinks back past both demotions with the
/// default tuning, checking lookups against a per-length reference along the way.
#[test]
fn grow_and_shrink_through_every_root_stride() {
    use std::collections::HashMap;
    let mut rng = Rng(7);
    let mut t = Ipv4Lpm::new();
    let mut reference: Vec<HashMap<u32, u32>> = vec![HashMap::new(); 33];
    let mut routes = Vec::new();
    let lookup_ref = |reference: &Vec<HashMap<u32, u32>>, addr: u32| {
        (0..=32u8).rev().find_map(|len| {
            let p = Ipv4Prefix::truncating(Ipv4Addr::from(addr), len).unwrap();
            reference[usize::from(len)].get(&p.bits()).copied()
        })
    };
    let check = |t: &Ipv4Lpm, reference: &Vec<HashMap<u32, u32>>, rng: &mut Rng| {
        t.check_invariants();
        let addrs: Vec<u32> = (0..2000).map(|_| rng.next() as u32 & 0x0fff_ffff).collect();
        let mut out = vec![None; addrs.len()];
        t.lookup_batch(&addrs, &mut out);
        for (a, o) in addrs.iter().zip(&out) {
            assert_eq!(
                *o,
                lookup_ref(reference, *a),
                "address {}",
                Ipv4Addr::from(*a)
            );
            assert_eq!(t.lookup_u32(*a), *o);
        }
    };
    let mut strides = vec![t.root_stride()];
    while routes.len() < 70_000 {
        let r = rng.next();
        let len = [8, 12, 16, 20, 22, 24, 24, 24, 26, 32][(r % 10) as usize];
        let p =
            Ipv4Prefix::truncating(Ipv4Addr::from((r >> 32) as u32 & 0x0fff_ffff), len).unwrap();
        let v = (r >> 8) as u32 & 0xffff;
        if t.insert(p, v).unwrap().is_none() {
            routes.push(p);
        }
        reference[usize::from(len)].insert(p.bits(), v);
        if strides.last() != Some(&t.root_stride()) {
            strides.push(t.root_stride());
            check(&t, &reference, &mut rng);
        }
    }
    check(&t, &reference, &mut rng);
    assert_eq!(t.len(), routes.len());
    let all: Vec<_> = t.iter().map(|(p, _)| p).collect();
    let mut sorted = routes.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    while let Some(p) = routes.pop() {
        assert!(t.remove(p).is_some());
        reference[usize::from(p.len())].remove(&p.bits());
        if strides.last() != Some(&t.root_stride()) {
            strides.push(t.root_stride());
            check(&t, &reference, &mut rng);
        }
        if routes.len() % 10_000 == 0 {
            check(&t, &reference, &mut rng);
        }
    }
    assert_eq!(strides, vec![6, 12, 18, 12, 6]);
    assert!(t.is_empty());
    assert!(t.memory_bytes() < 1 << 20);
}

// ------------------------------------------------------------------ property tests

/// A route-table operation for the property tests.
#[derive(Debug, Clone)]
enum Op<P> {
    Insert(P, u32),
    Remove(P),
}

/// The naive reference: a list of routes, longest match by scanning.
struct Reference<P> {
    routes: Vec<(P, u32)>,
}

impl<P: Copy + Eq + Ord> Reference<P> {
    fn insert(&mut self, p: P, v: u32) -> Option<u32> {
        match self.routes.iter_mut().find(|(q, _)| *q == p) {
            Some((_, old)) => Some(std::mem::replace(old, v)),
            None => {
                self.routes.push((p, v));
                None
            }
        }
    }

    fn remove(&mut self, p: P) -> Option<u32> {
        let i = self.routes.iter().position(|(q, _)| *q == p)?;
        Some(self.routes.swap_remove(i).1)
    }

    fn get(&self, p: P) -> Option<u32> {
        self.routes.iter().find(|(q, _)| *q == p).map(|r| r.1)
    }

    fn sorted(&self) -> Vec<(P, u32)> {
        let mut r = self.routes.clone();
        r.sort();
        r
    }
}

/// Addresses clustered around a few networks so that random prefixes overlap a lot, plus
/// fully random ones.
fn v4_addr() -> impl Strategy<Value = u32> + Clone {
    prop_oneof![
        3 => (prop::sample::select(vec![0x0a00_0000u32, 0x0a01_0000, 0xc0a8_0100, 0, 0xffff_ff00]),
              any::<u32>(), 0u32..32)
            .prop_map(|(base, noise, bits)| base ^ (noise & ((1u32 << bits) - 1))),
        1 => any::<u32>(),
    ]
}

fn v4_prefix() -> impl Strategy<Value = Ipv4Prefix> + Clone {
    (v4_addr(), 0u8..=32)
        .prop_map(|(a, len)| Ipv4Prefix::truncating(Ipv4Addr::from(a), len).unwrap())
}

fn v6_addr() -> impl Strategy<Value = u128> + Clone {
    prop_oneof![
        3 => (prop::sample::select(vec![
                  0x2001_0db8u128 << 96,
                  (0x2001_0db8u128 << 96) | (1 << 64),
                  0,
                  u128::MAX,
                  0xfe80u128 << 112,
              ]),
              any::<u128>(), 0u32..128)
            .prop_map(|(base, noise, bits)| base ^ (noise & ((1u128 << bits) - 1))),
        1 => any::<u128>(),
    ]
}

fn v6_prefix() -> impl Strategy<Value = Ipv6Prefix> + Clone {
    (v6_addr(), 0u8..=128)
        .prop_map(|(a, len)| Ipv6Prefix::truncating(Ipv6Addr::from(a), len).unwrap())
}

fn ops<P: std::fmt::Debug + Clone>(
    prefix: impl Strategy<Value = P> + Clone,
) -> impl Strategy<Value = Vec<Op<P>>> {
    prop::collection::vec(
        prop_oneof![
            3 => (prefix.clone(), 0u32..8).prop_map(|(p, v)| Op::Insert(p, v)),
            // Values near the reserved one must work too.
            1 => (prefix.clone(), prop::sample::select(vec![RESERVED_VALUE - 1, 1 << 31, 0]))
                .prop_map(|(p, v)| Op::Insert(p, v)),
            2 => prefix.prop_map(Op::Remove),
        ],
        0..80,
    )
}

macro_rules! check_against_reference {
    ($table:ident, $prefix:ty, $addr:ty, $int:ty, $lookup_int:ident, $ops:expr, $probes:expr) => {{
        let ops: Vec<Op<$prefix>> = $ops;
        let probes: Vec<$int> = $probes;
        for tuning in proptest_tunings() {
            let mut t = $table::with_tuning(tuning);
            let mut r = Reference { routes: Vec::new() };
            for op in &ops {
                match *op {
                    Op::Insert(p, v) => prop_assert_eq!(t.insert(p, v).unwrap(), r.insert(p, v)),
                    Op::Remove(p) => prop_assert_eq!(t.remove(p), r.remove(p)),
                }
                prop_assert_eq!(t.len(), r.routes.len());
            }
            t.check_invariants();
            // Probe the random addresses and the edges of every prefix ever mentioned.
            let mut addrs = probes.clone();
            for op in &ops {
                let (Op::Insert(p, _) | Op::Remove(p)) = *op;
                let first = p.bits();
                let last = first | !p.mask();
                addrs.extend([first, last, first.wrapping_sub(1), last.wrapping_add(1)]);
                prop_assert_eq!(t.get(p), r.get(p));
            }
            let mut out = vec![None; addrs.len()];
            t.lookup_batch(&addrs, &mut out);
            for (i, &a) in addrs.iter().enumerate() {
                let expect = r
                    .routes
                    .iter()
                    .filter(|(p, _)| p.contains(<$addr>::from(a)))
                    .max_by_key(|(p, _)| p.len())
                    .map(|(_, v)| *v);
                prop_assert_eq!(t.$lookup_int(a), expect, "address {}", <$addr>::from(a));
                prop_assert_eq!(t.lookup(<$addr>::from(a)), expect);
                prop_assert_eq!(out[i], expect);
            }
            prop_assert_eq!(t.iter().collect::<Vec<_>>(), r.sorted());
            // A clone answers the same, and emptying the table leaves no garbage behind.
            let c = t.clone();
            for (p, _) in c.iter() {
                prop_assert!(t.remove(p).is_some());
            }
            prop_assert!(t.is_empty());
            t.check_invariants();
            prop_assert_eq!(t.iter().count(), 0);
            for &a in &addrs {
                prop_assert_eq!(t.$lookup_int(a), None);
            }
            c.check_invariants();
        }
    }};
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn v4_matches_reference(ops in ops(v4_prefix()), probes in prop::collection::vec(v4_addr(), 0..64)) {
        check_against_reference!(Ipv4Lpm, Ipv4Prefix, Ipv4Addr, u32, lookup_u32, ops, probes);
    }

    #[test]
    fn v6_matches_reference(ops in ops(v6_prefix()), probes in prop::collection::vec(v6_addr(), 0..64)) {
        check_against_reference!(Ipv6Lpm, Ipv6Prefix, Ipv6Addr, u128, lookup_u128, ops, probes);
    }

    #[test]
    fn v4_parse_never_panics(s in ".{0,24}") {
        if let Ok(p) = s.parse::<Ipv4Prefix>() {
            prop_assert_eq!(p.to_string().parse::<Ipv4Prefix>().unwrap(), p);
        }
    }

    #[test]
    fn v6_parse_never_panics(s in "[0-9a-f:./]{0,48}") {
        if let Ok(p) = s.parse::<Ipv6Prefix>() {
            prop_assert_eq!(p.to_string().parse::<Ipv6Prefix>().unwrap(), p);
        }
    }

    #[test]
    fn prefix_new_checks(a in any::<u32>(), len in any::<u8>()) {
        match Ipv4Prefix::new(Ipv4Addr::from(a), len) {
            Ok(p) => {
                prop_assert!(len <= 32);
                prop_assert_eq!(p.to_string().parse::<Ipv4Prefix>().unwrap(), p);
                prop_assert!(p.contains(Ipv4Addr::from(a)));
            }
            Err(LpmError::BadPrefixLength { .. }) => prop_assert!(len > 32),
            Err(LpmError::HostBitsSet { .. }) => {
                prop_assert!(len < 32);
                prop_assert!(a & !(u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)) != 0);
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }
}
