//! The Redis Cluster subscription audit's own CPU: what the bus task spends every
//! `subscription_audit_ms` (5 s by default) besides its two Redis round trips, and what keeping
//! its counts costs when a topic's channel is subscribed.
//!
//! `cargo bench --bench bus_audit -- [--rounds 7]`
//!
//! The audit (`bus/run.rs`) compares, per master, how many shard channels the master reports for
//! this node with how many this node subscribed there. The reconciler counts its channels per
//! hash slot as they are subscribed and unsubscribed (`bus/subs.rs`, `bus/shards.rs`), so a pass
//! sums 16,384 counters whatever the number of topics. For 10k, 100k and 1M topics against three
//! masters that hold all of them (the usual, nothing-to-repair case) this reports:
//! - ms per audit pass, median [min–max] over the rounds;
//! - ns per topic subscribed through the reconciler, with the channel named and hashed for its
//!   slot, against the same reconciler with a constant slot (the counting's own price);
//! - for reference, ns per topic of naming and hashing every channel on every pass, which is what
//!   a pass cost before the counts were kept (~110 ns per topic, 110 ms per pass at 1M topics).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Parser;

use ringgate::bus::config::BusConfig;
use ringgate::bus::envelope::{Codec, RinggateCodec};
use ringgate::bus::shards::{self, SlotOwners};
use ringgate::bus::subs::{Plan, Reconciler, SlotOf};

#[derive(Parser)]
struct Args {
    /// Rounds per size; the figures are medians over them.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Subscribes every topic through a fresh reconciler; (the reconciler, ns per topic).
fn subscribe_all(topics: &[String], slot_of: SlotOf) -> (Reconciler, f64) {
    let mut rec = Reconciler::new(Duration::from_secs(5), slot_of);
    let mut plan = Plan::default();
    let now = Instant::now();
    let start = Instant::now();
    for t in topics {
        rec.changed(t, 1, now, &mut plan);
    }
    let ns = start.elapsed().as_nanos() as f64 / topics.len() as f64;
    assert_eq!(plan.subscribe.len(), topics.len());
    (rec, ns)
}

fn main() {
    let rounds = Args::parse().rounds.max(1);
    let cfg = BusConfig::default();
    let owners: SlotOwners = vec![
        (0, 5460, "127.0.0.1:7000".into()),
        (5461, 10922, "127.0.0.1:7001".into()),
        (10923, 16383, "127.0.0.1:7002".into()),
    ];
    println!(
        "| topics | audit pass, ms: median [min–max] | subscribe, ns per topic: slot counted / constant slot | naming + hashing every channel, ns per topic (a pass before) |"
    );
    println!("|---|---|---|---|");
    for n in [10_000usize, 100_000, 1_000_000] {
        let topics: Vec<String> = (0..n).map(|i| format!("rooms:{i}")).collect();
        let mut counted_ns = Vec::new();
        let mut constant_ns = Vec::new();
        let mut pass_ms = Vec::new();
        let mut naming_ns = Vec::new();
        for _ in 0..rounds {
            let prefix = cfg.prefix.clone();
            let (rec, ns) = subscribe_all(
                &topics,
                Box::new(move |t| {
                    shards::hash_slot(RinggateCodec::default().channel(&prefix, t).as_bytes())
                }),
            );
            counted_ns.push(ns);
            constant_ns.push(subscribe_all(&topics, Box::new(|_| 0)).1);
            // What the masters report when they hold every channel.
            let held: HashMap<String, u64> = rec
                .slot_counts()
                .per_owner(&owners)
                .into_iter()
                .map(|(m, c)| (m.to_string(), c))
                .collect();
            let start = Instant::now();
            let expected = rec.slot_counts().per_owner(&owners);
            let short = shards::shortfall(&held, &expected);
            pass_ms.push(start.elapsed().as_secs_f64() * 1e3);
            assert!(short.is_empty(), "{short:?}");
            assert_eq!(expected.values().sum::<u64>(), n as u64);
            let start = Instant::now();
            let mut per_master: HashMap<&str, u64> = HashMap::new();
            for t in &topics {
                let c = RinggateCodec::default().channel(&cfg.prefix, t);
                if let Some(m) = shards::owner(&owners, &c) {
                    *per_master.entry(m).or_default() += 1;
                }
            }
            naming_ns.push(start.elapsed().as_nanos() as f64 / n as f64);
            assert_eq!(per_master, expected);
        }
        let (pass, pass_min, pass_max) = median(pass_ms);
        println!(
            "| {n} | {pass:.3} [{pass_min:.3}–{pass_max:.3}] | {:.0} / {:.0} | {:.0} |",
            median(counted_ns).0,
            median(constant_ns).0,
            median(naming_ns).0
        );
    }
}
