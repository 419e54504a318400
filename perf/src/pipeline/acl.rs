//! `acl-10`, `acl-1k`, `acl-10k`: first-packet classification by the ACL classifier
//! ([`pipelines::acl::Classifier`]) alone, with 10, 1000 and 10,000 rules.
//!
//! The rule set is NetworkPolicy-like: `n` allow rules for single peers (IPv4 /32 sources,
//! 7 apart) on one TCP or UDP port each (every fifth a range 8000-8100), one allow rule for
//! 172.16.0.0/12, and a final deny-all. Keys come from a pool of 4096: peers of the set
//! (matching or one address off), ports matching or not, TCP and UDP. Each figure is ns per
//! `classify` over batches of 64 keys; the build time (one `Classifier::build` of the whole set,
//! a transaction's worth) and the automaton's states and memory are reported too.
//!
//! Target (issue 6): 10k rules cost at most 2x what 10 rules cost. `acl-10k` reruns `acl-10`
//! in the same invocation and reports the ratio.
//!
//! # Honesty checks
//! Every key of the pool is checked against the linear reference scan
//! ([`pipelines::acl::classify_linear`]) before timing; allows and denies must both occur.

use super::gen::Rng;
use super::report::{Figure, RunSet, ScenarioResult, TargetCheck};
use super::Settings;
use crate::alloc;
use crate::os::Stopwatch;
use pipelines::acl::{classify_linear, AclAction, AclKey, AclRule, Classifier};
use pipelines::tables::IpPrefix;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

const BATCH: usize = 64;
const KEY_POOL: usize = 4096;

/// The NetworkPolicy-like set of `n` peer rules, an allow for 172.16.0.0/12 and a deny-all.
pub(super) fn policy(n: usize) -> Vec<AclRule> {
    let any = AclRule {
        priority: 1000,
        src: None,
        dst: None,
        protocol: None,
        src_ports: None,
        dst_ports: None,
        icmp_type: None,
        icmp_code: None,
        action: AclAction::Deny,
    };
    let mut rules: Vec<AclRule> = (0..n)
        .map(|i| {
            let port = 80 + (i % 50) as u16;
            AclRule {
                priority: 100,
                src: Some(IpPrefix::host(IpAddr::V4(Ipv4Addr::from(
                    0x0a00_0000 + (i as u32) * 7,
                )))),
                protocol: Some(if i % 3 == 0 { 17 } else { 6 }),
                dst_ports: Some(if i % 5 == 0 {
                    (8000, 8100)
                } else {
                    (port, port)
                }),
                action: AclAction::Allow,
                ..any.clone()
            }
        })
        .collect();
    rules.push(AclRule {
        priority: 50,
        src: "172.16.0.0/12".parse().ok(),
        action: AclAction::Allow,
        ..any.clone()
    });
    rules.push(any);
    rules
}

fn keys(n: usize, rng: &mut Rng) -> Vec<AclKey> {
    (0..KEY_POOL)
        .map(|_| {
            let r = rng.next_u64();
            let peer = (r % n as u64) as u32;
            let src = 0x0a00_0000 + peer * 7 + u32::from(r.is_multiple_of(5));
            let udp = (r >> 8).is_multiple_of(3);
            let port = [80 + (peer % 50) as u16, 8050, 81, 443][((r >> 16) % 4) as usize];
            AclKey {
                ipv6: false,
                src: src as u128,
                dst: 0x0a63_0001,
                protocol: if udp { 17 } else { 6 },
                has_l4: true,
                l4_a: 30000 + (r >> 24) as u16 % 30000,
                l4_b: port,
            }
        })
        .collect()
}

/// Median ns per classification of `classifier` over the key pool.
fn measure(
    settings: &Settings,
    classifier: &Classifier,
    pool: &[AclKey],
    allocs: &mut u64,
) -> Result<RunSet, String> {
    let lookups = settings.packets.max(BATCH as u64) as usize / BATCH * BATCH;
    let mut out = [None; BATCH];
    let mut pass = || {
        let mut pos = 0;
        for _ in 0..lookups / BATCH {
            if pos + BATCH > pool.len() {
                pos = 0;
            }
            for (slot, key) in out.iter_mut().zip(black_box(&pool[pos..pos + BATCH])) {
                *slot = classifier.classify(key);
            }
            black_box(&mut out);
            pos += BATCH;
        }
    };
    pass();
    RunSet::collect(settings, || {
        let stopwatch = Stopwatch::start();
        let before = alloc::allocations();
        let start = Instant::now();
        pass();
        let elapsed = start.elapsed();
        *allocs += alloc::allocations() - before;
        Ok((elapsed.as_nanos() as f64 / lookups as f64, stopwatch.read()))
    })
}

/// `acl-<n>`.
pub fn run(name: &'static str, n: usize, settings: &Settings) -> Result<ScenarioResult, String> {
    let rules = policy(n);
    let before = alloc::live_bytes();
    let start = Instant::now();
    let classifier = Classifier::build(&rules).map_err(|e| format!("{name}: {e}"))?;
    let build = start.elapsed();
    let heap = alloc::live_bytes().saturating_sub(before);
    let mut rng = Rng::new(0xac1_0000 ^ n as u64);
    let pool = keys(n, &mut rng);
    let (mut allowed, mut denied) = (0, 0);
    for key in &pool {
        let got = classifier.classify(key);
        let expected = classify_linear(&rules, key);
        if got != expected {
            return Err(format!(
                "{name}: {key:?} classified {got:?}, reference {expected:?}"
            ));
        }
        match got {
            Some((_, AclAction::Allow)) => allowed += 1,
            _ => denied += 1,
        }
    }
    if allowed == 0 || denied == 0 {
        return Err(format!(
            "{name}: {allowed} allowed, {denied} denied: the pool tests nothing"
        ));
    }
    let mut allocs = 0;
    let runs = measure(settings, &classifier, &pool, &mut allocs)?;
    let mut result = ScenarioResult {
        scenario: name,
        description: format!(
            "Classifier::classify, batches of {BATCH} keys from a pool of {KEY_POOL} \
             ({allowed} allowed, {denied} denied), {} rules (NetworkPolicy-like); per-lookup \
             figures",
            rules.len()
        ),
        packets_per_run: Some(settings.packets),
        table_bytes: classifier.memory_bytes(),
        table_heap_bytes: Some(heap),
        allocations_in_timed_loop: Some(allocs),
        ..ScenarioResult::default()
    };
    result.set_runs(runs);
    result.figures.push(Figure {
        name: "rules".into(),
        value: rules.len() as f64,
        unit: "",
    });
    result.figures.push(Figure {
        name: "states".into(),
        value: classifier.states() as f64,
        unit: "",
    });
    result.figures.push(Figure {
        name: "build".into(),
        value: build.as_secs_f64() * 1e3,
        unit: "ms",
    });
    if n >= 10_000 {
        // The reference: 10 rules, measured now, in the same conditions.
        let small = policy(10);
        let small_classifier = Classifier::build(&small).map_err(|e| format!("{name}: {e}"))?;
        let mut rng = Rng::new(0xac1_0000 ^ 10);
        let small_pool = keys(10, &mut rng);
        let small_runs = measure(settings, &small_classifier, &small_pool, &mut allocs)?;
        let ratio = result.ns_per_packet.unwrap_or(f64::MAX) / small_runs.median();
        result.figures.push(Figure {
            name: "acl-10".into(),
            value: small_runs.median(),
            unit: "ns",
        });
        result.figures.push(Figure {
            name: "ratio".into(),
            value: ratio,
            unit: "x",
        });
        result
            .targets
            .push(TargetCheck::at_most("acl_10k_vs_10", 2.0, ratio));
        result.targets.push(TargetCheck::at_most(
            "build_ms",
            1000.0,
            build.as_secs_f64() * 1e3,
        ));
    }
    Ok(result)
}
