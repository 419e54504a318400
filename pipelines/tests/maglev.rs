//! Maglev consistent hashing: determinism, balance, weights, disruption, degenerate input and
//! a property test over arbitrary input (no panic, invariants, Sainte-Laguë apportionment).

use pipelines::maglev::{
    backend_key, is_valid_table_size, Maglev, MaglevBackend, MaglevError, DEFAULT_TABLE_SIZE,
    MAX_TABLE_SIZE, TABLE_SIZES,
};
use proptest::prelude::*;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `n` backends 10.x.y.z:8080 from `first`, ids = their index from `first`, weight 1.
fn backends_from(first: u32, n: u32) -> Vec<MaglevBackend> {
    (first..first + n)
        .map(|i| {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            MaglevBackend::new(backend_key(addr, 8080), i, 1)
        })
        .collect()
}

fn backends(n: u32) -> Vec<MaglevBackend> {
    backends_from(0, n)
}

fn build(backends: &[MaglevBackend]) -> Maglev {
    Maglev::new(backends, Maglev::table_size_for(backends.len())).expect("valid input")
}

/// Entries per id.
fn counts(maglev: &Maglev) -> HashMap<u32, usize> {
    let mut counts = HashMap::new();
    for &id in maglev.entries() {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Fraction of entries that differ between two tables of the same size, and the fraction
/// that differ where `keep` holds for (old, new).
fn moved(before: &Maglev, after: &Maglev, keep: impl Fn(u32, u32) -> bool) -> (f64, f64) {
    assert_eq!(before.entries().len(), after.entries().len());
    let m = before.entries().len() as f64;
    let changed: Vec<(u32, u32)> = before
        .entries()
        .iter()
        .zip(after.entries())
        .filter(|(a, b)| a != b)
        .map(|(&a, &b)| (a, b))
        .collect();
    let selected = changed.iter().filter(|(a, b)| keep(*a, *b)).count();
    (changed.len() as f64 / m, selected as f64 / m)
}

/// Small deterministic generator for hashes and shuffles.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

#[test]
fn same_backends_same_table_in_any_order() {
    let original = backends(100);
    let reference = build(&original);
    let mut rng = XorShift(0x5eed);
    for _ in 0..5 {
        let mut shuffled = original.clone();
        rng.shuffle(&mut shuffled);
        assert_eq!(build(&shuffled).entries(), reference.entries());
    }
    let mut reversed = original.clone();
    reversed.reverse();
    assert_eq!(build(&reversed).entries(), reference.entries());
    // A rebuild gives what `new` gives, also after other content.
    let mut rebuilt = build(&backends(7));
    rebuilt.rebuild(&original).unwrap();
    assert_eq!(rebuilt.entries(), reference.entries());
    assert_eq!(rebuilt.backends(), reference.backends());
}

/// Pins the table of a fixed input: the choice must agree between nodes and across restarts,
/// so a change of the permutation seeds or of the turn order must be deliberate (it remaps
/// every Service when nodes are upgraded one by one).
#[test]
fn table_is_stable_across_versions() {
    let mut input = backends(10);
    input[3].weight = 3;
    let maglev = Maglev::new(&input, 1021).unwrap();
    let fingerprint = maglev
        .entries()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &id| {
            (h ^ u64::from(id)).wrapping_mul(0x0100_0000_01b3)
        });
    assert_eq!(&maglev.entries()[..8], &[5, 4, 4, 4, 3, 5, 7, 3]);
    assert_eq!(fingerprint, 0xeee4_a664_6d7e_02d7, "{fingerprint:#x}");
}

#[test]
fn equal_weights_balance_within_one_entry() {
    for n in [1u32, 2, 3, 10, 100, 655, 1000] {
        let maglev = build(&backends(n));
        let m = maglev.table_size();
        assert_eq!(maglev.entries().len(), m);
        let counts = counts(&maglev);
        assert_eq!(counts.len(), n as usize, "every backend has entries");
        let (min, max) = (
            *counts.values().min().unwrap(),
            *counts.values().max().unwrap(),
        );
        assert!(max - min <= 1, "n={n}: {min}..{max}");
        let ideal = m as f64 / f64::from(n);
        for &c in counts.values() {
            assert!(
                (c as f64 - ideal).abs() / ideal < 0.01,
                "n={n}: {c} vs {ideal}"
            );
        }
    }
}

#[test]
fn weights_give_proportional_shares() {
    let mut input = backends(3);
    for (b, w) in input.iter_mut().zip([1, 2, 3]) {
        b.weight = w;
    }
    let maglev = Maglev::new(&input, DEFAULT_TABLE_SIZE).unwrap();
    let held = counts(&maglev);
    for (id, w) in [(0u32, 1.0), (1, 2.0), (2, 3.0)] {
        let share = held[&id] as f64 / DEFAULT_TABLE_SIZE as f64;
        assert!((share - w / 6.0).abs() < 0.001, "id {id}: {share}");
    }

    // 100 backends with weights 1-100: every share within 1 entry plus the rounding slack
    // of the divisor method (N / 2 entries spread over Σw) of its ideal.
    let mut input = backends(100);
    for (i, b) in input.iter_mut().enumerate() {
        b.weight = (i % 100 + 1) as u16;
    }
    let total: f64 = input.iter().map(|b| f64::from(b.weight)).sum();
    let maglev = Maglev::new(&input, DEFAULT_TABLE_SIZE).unwrap();
    let counts = counts(&maglev);
    for b in &input {
        let ideal = DEFAULT_TABLE_SIZE as f64 * f64::from(b.weight) / total;
        let slack = 0.5 + f64::from(b.weight) * 50.0 / total;
        let got = counts[&b.id] as f64;
        assert!(
            (got - ideal).abs() <= slack,
            "weight {}: {got} vs {ideal}",
            b.weight
        );
    }
}

/// Canary split: 90/10 with a 65537 table is 90% +- 0.01%.
#[test]
fn canary_split() {
    let mut input = backends(2);
    input[0].weight = 9;
    let maglev = Maglev::new(&input, DEFAULT_TABLE_SIZE).unwrap();
    let share = counts(&maglev)[&0] as f64 / DEFAULT_TABLE_SIZE as f64;
    assert!((share - 0.9).abs() < 0.0001, "{share}");
}

#[test]
fn removing_a_backend_moves_little_else() {
    for n in [2u32, 5, 10, 100, 300, 655, 1000] {
        let input = backends(n);
        let before = build(&input);
        let m = before.table_size();
        let mut worst = 0.0f64;
        for gone in (0..n).step_by((n as usize / 20).max(1)) {
            let rest: Vec<MaglevBackend> = input.iter().copied().filter(|b| b.id != gone).collect();
            let after = Maglev::new(&rest, m).unwrap();
            assert!(after.entries().iter().all(|&id| id != gone));
            let (total, others) = moved(&before, &after, |old, _| old != gone);
            // Its own entries must move, and they are 1/n of the table (+- one entry).
            let own = total - others;
            assert!((own - 1.0 / f64::from(n)).abs() <= 1.0 / m as f64 + 1e-12);
            worst = worst.max(others);
        }
        // Measured worst: 0.9% (n = 300); bound 1.5%.
        assert!(
            worst <= 0.015,
            "n={n}: {:.2}% of other entries moved",
            worst * 100.0
        );
    }
}

#[test]
fn adding_a_backend_moves_about_its_share() {
    for n in [2u32, 5, 10, 100, 300, 655, 1000] {
        let input = backends(n);
        let m = Maglev::table_size_for(n as usize + 1);
        let before = Maglev::new(&input, m).unwrap();
        for extra in 0..5 {
            let added = backends_from(100_000 + extra, 1)[0];
            let mut more = input.clone();
            more.push(added);
            let after = Maglev::new(&more, m).unwrap();
            let (total, others) = moved(&before, &after, |_, new| new != added.id);
            let share = 1.0 / f64::from(n + 1);
            assert!(
                (total - others - share).abs() <= 1.0 / m as f64 + 1e-12,
                "n={n}: {total}"
            );
            assert!(
                others <= 0.015,
                "n={n}: {:.2}% moved between old backends",
                others * 100.0
            );
        }
    }
}

#[test]
fn changing_a_weight_moves_about_the_difference() {
    let input = backends(10);
    let before = build(&input);
    let mut heavier = input.clone();
    heavier[4].weight = 2;
    let after = build(&heavier);
    let (total, _) = moved(&before, &after, |_, _| true);
    // Backend 4 goes from 1/10 to 2/11 of the table: 8.2% must move to it.
    let needed = 2.0 / 11.0 - 1.0 / 10.0;
    assert!(
        total >= needed - 0.0001 && total <= needed + 0.015,
        "{total}"
    );
}

#[test]
fn no_backend_means_no_choice() {
    let zero: Vec<MaglevBackend> = backends(5)
        .into_iter()
        .map(|b| MaglevBackend { weight: 0, ..b })
        .collect();
    for input in [&[][..], &zero[..]] {
        let maglev = Maglev::new(input, DEFAULT_TABLE_SIZE).unwrap();
        assert!(maglev.is_empty());
        assert_eq!(maglev.len(), 0);
        assert!(maglev.entries().is_empty());
        assert_eq!(maglev.table_size(), DEFAULT_TABLE_SIZE);
        for hash in [0, 1, u64::MAX / 2, u64::MAX] {
            assert_eq!(maglev.lookup(hash), None);
        }
    }
    // Emptied by a rebuild, then filled again.
    let mut maglev = build(&backends(3));
    maglev.rebuild(&zero).unwrap();
    assert_eq!(maglev.lookup(12345), None);
    maglev.rebuild(&backends(3)).unwrap();
    assert!(maglev.lookup(12345).is_some());
}

#[test]
fn zero_weight_backends_are_absent() {
    let mut input = backends(4);
    input[2].weight = 0;
    let with_zero = build(&input);
    let without = build(&[input[0], input[1], input[3]]);
    assert_eq!(with_zero.entries(), without.entries());
    assert_eq!(with_zero.len(), 3);
}

#[test]
fn duplicates() {
    // The same (key, id) twice is one backend with the larger weight.
    let input = backends(3);
    let mut doubled = input.clone();
    doubled.push(MaglevBackend {
        weight: 1,
        ..input[1]
    });
    doubled.insert(
        0,
        MaglevBackend {
            weight: 0,
            ..input[1]
        },
    );
    assert_eq!(build(&doubled).entries(), build(&input).entries());
    let mut heavier = input.clone();
    heavier[1].weight = 5;
    let mut listed_twice = input.clone();
    listed_twice.push(heavier[1]);
    let a = build(&heavier);
    let b = build(&listed_twice);
    assert_eq!(a.entries(), b.entries());
    assert_eq!(b.len(), 3);
    assert_eq!(b.backends().iter().find(|x| x.id == 1).unwrap().weight, 5);

    // The same key under two ids: two backends sharing a permutation, each with its share,
    // in the same table whatever the order.
    let key = input[0].key;
    let mut colliding = input.clone();
    colliding.push(MaglevBackend::new(key, 77, 1));
    let maglev = build(&colliding);
    let counts = counts(&maglev);
    assert_eq!(counts.len(), 4);
    let (min, max) = (
        *counts.values().min().unwrap(),
        *counts.values().max().unwrap(),
    );
    assert!(max - min <= 1, "{counts:?}");
    colliding.reverse();
    assert_eq!(build(&colliding).entries(), maglev.entries());
}

#[test]
fn lookup_reads_the_entry_of_the_hash_range() {
    let maglev = Maglev::new(&backends(7), 251).unwrap();
    let m = 251u128;
    for (slot, &id) in maglev.entries().iter().enumerate() {
        // The first and last hash of the slot's range [slot 2^64 / M, (slot + 1) 2^64 / M).
        let first = ((slot as u128) << 64).div_ceil(m) as u64;
        let last = ((((slot as u128 + 1) << 64).div_ceil(m)) - 1) as u64;
        assert_eq!(maglev.lookup(first), Some(id), "slot {slot}");
        assert_eq!(maglev.lookup(last), Some(id), "slot {slot}");
    }
    assert_eq!(maglev.lookup(u64::MAX), maglev.entries().last().copied());
}

#[test]
fn lookups_spread_like_the_table() {
    let maglev = build(&backends(10));
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let mut hits = [0u32; 10];
    let samples = 1_000_000;
    for _ in 0..samples {
        hits[maglev.lookup(rng.next()).unwrap() as usize] += 1;
    }
    for (id, &h) in hits.iter().enumerate() {
        let share = f64::from(h) / f64::from(samples);
        assert!((share - 0.1).abs() < 0.003, "backend {id}: {share}");
    }
}

#[test]
fn table_sizes() {
    assert!(TABLE_SIZES.iter().all(|&s| is_valid_table_size(s)));
    assert!(TABLE_SIZES.contains(&DEFAULT_TABLE_SIZE));
    assert_eq!(Maglev::table_size_for(1), DEFAULT_TABLE_SIZE);
    assert_eq!(Maglev::table_size_for(1000), 131_071);
    assert_eq!(Maglev::table_size_for(1 << 40), MAX_TABLE_SIZE);
    for n in [0, 1, 100, 655, 656, 1024, 5000, 10_485] {
        let size = Maglev::table_size_for(n);
        assert!(size >= 100 * n && is_valid_table_size(size), "{n}: {size}");
    }
    for bad in [0, 1, 4, 65_536, MAX_TABLE_SIZE + 1, usize::MAX] {
        assert_eq!(
            Maglev::new(&backends(1), bad).unwrap_err(),
            MaglevError::TableSize(bad)
        );
    }
    assert_eq!(
        Maglev::new(&backends(12), 11).unwrap_err(),
        MaglevError::TooManyBackends {
            backends: 12,
            table_size: 11
        }
    );
    // Exactly as many backends as entries: one entry each.
    let full = Maglev::new(&backends(11), 11).unwrap();
    assert_eq!(counts(&full).len(), 11);
    // A failed rebuild leaves the table as it was.
    let mut maglev = build(&backends(3));
    let before = maglev.entries().to_vec();
    assert!(maglev.rebuild_with_size(&backends(4), 100).is_err());
    assert_eq!(maglev.entries(), &before[..]);
    assert_eq!(maglev.table_size(), DEFAULT_TABLE_SIZE);
}

#[test]
fn memory_is_reported() {
    let maglev = build(&backends(100));
    let bytes = maglev.memory_bytes();
    assert!(bytes >= DEFAULT_TABLE_SIZE * 4 + 100 * 16, "{bytes}");
    assert!(bytes < DEFAULT_TABLE_SIZE * 4 + 100 * 16 + 1024, "{bytes}");
    let empty = Maglev::empty(DEFAULT_TABLE_SIZE).unwrap();
    assert!(empty.memory_bytes() < 1024);
}

#[test]
fn backend_keys_differ_by_address_port_and_family() {
    let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
    let keys = [
        backend_key(v4, 80),
        backend_key(v4, 81),
        backend_key(mapped, 80),
        backend_key(v6, 80),
        backend_key(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 80),
    ];
    for (i, a) in keys.iter().enumerate() {
        for b in &keys[i + 1..] {
            assert_ne!(a, b);
        }
    }
    assert_eq!(backend_key(v4, 80), backend_key(v4, 80));
}

/// Table sizes for the property test: mostly valid small primes, sometimes anything.
fn table_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => prop::sample::select(vec![2usize, 3, 5, 7, 11, 13, 31, 97, 251, 509, 1021, 2039]),
        1 => any::<usize>(),
        1 => 0usize..3000,
    ]
}

/// Backends with unique ids (their index), keys from a small set (collisions) or anything,
/// weights often zero, small or large.
fn backend_list() -> impl Strategy<Value = Vec<MaglevBackend>> {
    prop::collection::vec(
        (
            prop_oneof![0u64..4, any::<u64>()],
            prop_oneof![Just(0u16), 1u16..4, any::<u16>()],
        ),
        0..40,
    )
    .prop_map(|list| {
        list.into_iter()
            .enumerate()
            .map(|(i, (key, weight))| MaglevBackend::new(key, i as u32, weight))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_input_is_handled(
        input in backend_list(),
        size in table_size(),
        hashes in prop::collection::vec(any::<u64>(), 1..32),
        seed in 1u64..,
    ) {
        let live = input.iter().filter(|b| b.weight > 0).count();
        let result = Maglev::new(&input, size);
        if !is_valid_table_size(size) {
            prop_assert_eq!(result.unwrap_err(), MaglevError::TableSize(size));
            return Ok(());
        }
        if live > size {
            prop_assert_eq!(
                result.unwrap_err(),
                MaglevError::TooManyBackends { backends: live, table_size: size }
            );
            return Ok(());
        }
        let maglev = result.unwrap();
        prop_assert_eq!(maglev.len(), live);
        prop_assert_eq!(maglev.table_size(), size);
        for &hash in &hashes {
            match maglev.lookup(hash) {
                None => prop_assert_eq!(live, 0),
                Some(id) => prop_assert!(input[id as usize].weight > 0),
            }
        }
        if live == 0 {
            prop_assert!(maglev.entries().is_empty());
            return Ok(());
        }
        prop_assert_eq!(maglev.entries().len(), size);

        // Order does not matter.
        let mut shuffled = input.clone();
        XorShift(seed).shuffle(&mut shuffled);
        let again = Maglev::new(&shuffled, size).unwrap();
        prop_assert_eq!(again.entries(), maglev.entries());

        // Sainte-Laguë: for backends i, j holding c_i, c_j entries,
        // (2 c_i - 1) / w_i <= (2 c_j + 1) / w_j, and every entry is someone's.
        let mut held = vec![0u64; input.len()];
        for &id in maglev.entries() {
            held[id as usize] += 1;
        }
        prop_assert_eq!(held.iter().sum::<u64>(), size as u64);
        for (i, a) in input.iter().enumerate() {
            if a.weight == 0 {
                prop_assert_eq!(held[i], 0);
                continue;
            }
            for (j, b) in input.iter().enumerate() {
                if b.weight == 0 || held[i] == 0 {
                    continue;
                }
                let lhs = (2 * held[i] - 1) * u64::from(b.weight);
                let rhs = (2 * held[j] + 1) * u64::from(a.weight);
                prop_assert!(lhs <= rhs, "backend {} holds {} (w {}), {} holds {} (w {})",
                    i, held[i], a.weight, j, held[j], b.weight);
            }
        }
    }
}
