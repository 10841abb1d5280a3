//! Burst mode: K broadcasts published back to back, in one admin request, to N subscribers.
//!
//! This is the case corked sends exist for: every subscriber has K frames to receive at once, so a
//! server that sends each frame on its own pays K trips through the kernel's TCP send path per
//! subscriber, where one that joins a connection's queued frames pays about one. One request carries
//! the whole burst (a JSON array, taken by every server under test as K broadcasts in order), so the
//! publisher's own connection cost is paid once and the K broadcasts reach the server together.
//!
//! A burst's figures cover all its N × K deliveries: time from the publish to the last copy received,
//! p50/p99 of every copy's latency, deliveries/s (copies / time to the last one) and server CPU per
//! delivery (the server's run time from just before the publish until every subscriber has the last
//! broadcast). Each burst is one `Shot` of the round, so the round's table gives median [min–max]
//! over `--bursts` bursts.

use std::time::Duration;

use super::common::clock::mono_ns;
use super::common::procfs;
use super::common::stats;
use super::common::wsclient::TOPIC;
use super::{cpu_us, finish_round, grow, Args, Grown, Round, Shot, Subject, COMMAND_TIMEOUT};

/// Grows one server's subscribers to `n`, then times `--bursts` bursts of `--k` broadcasts each,
/// numbered from `*next_seq` on (advanced past the last one used).
pub fn round(
    args: &Args,
    s: &mut Subject,
    n: usize,
    next_seq: &mut u64,
    pids: &[u32],
) -> Result<Round, String> {
    let Grown {
        opened,
        listen_overflows,
        live,
        subscribers,
    } = grow(args, s, n)?;
    let k = args.k as u64;
    let pad = "x".repeat(args.payload_bytes);
    let server_pid = [s.server.pid()];
    let client_pids = s.clients.pids();
    let mark = procfs::cpu_mark(pids);
    let mut shots = Vec::new();
    for _ in 0..args.bursts.max(1) {
        let base = *next_seq;
        *next_seq += k;
        s.clients.reset(base, COMMAND_TIMEOUT)?;
        let items: Vec<(String, String)> = (base..base + k)
            .map(|seq| (TOPIC.to_owned(), format!(r#""seq":{seq},"pad":"{pad}""#)))
            .collect();
        let server0 = cpu_us(&server_pid);
        let client0 = cpu_us(&client_pids);
        let t_pub = s.server.publish_admin_many("bench", &items)?;
        // Frames reach a connection in order, so the last broadcast arriving everywhere means the burst
        // did (a copy missing anyway counts as lost below).
        s.clients.wait_got(
            base + k - 1,
            &live,
            Duration::from_millis(args.deliver_timeout_ms),
        )?;
        let server_cpu_us = cpu_us(&server_pid) - server0;
        let client_cpu_us = cpu_us(&client_pids) - client0;
        let receipts = s.clients.collect(args.k, COMMAND_TIMEOUT)?;
        let mut lat_ns: Vec<u64> = receipts
            .iter()
            .flatten()
            .map(|t| t.saturating_sub(t_pub))
            .collect();
        lat_ns.sort_unstable();
        let to_last_ns = lat_ns.last().copied().unwrap_or(0);
        shots.push(Shot {
            seq: base,
            expected: subscribers * args.k,
            received: lat_ns.len(),
            to_last_ms: to_last_ns as f64 / 1e6,
            p50_ms: stats::percentile(&lat_ns, 50.0) as f64 / 1e6,
            p99_ms: stats::percentile(&lat_ns, 99.0) as f64 / 1e6,
            deliveries_per_s: lat_ns.len() as f64 / (to_last_ns.max(1) as f64 / 1e9),
            server_cpu_us,
            client_cpu_us,
        });
        let next = t_pub + args.spacing_ms * 1_000_000;
        let now = mono_ns();
        if next > now {
            super::common::guard::sleep_checked(Duration::from_nanos(next - now))?;
        }
    }
    let cpu = procfs::cpu_since(&mark, pids);
    Ok(finish_round(
        &s.label,
        n,
        subscribers,
        &opened,
        listen_overflows,
        shots,
        cpu,
    ))
}
