//! Which local addresses a run's connections come from — `--source`, or chosen here for a
//! loopback server — and how many connections one address can take before connect() stalls.
//!
//! Why it matters: a TCP connection is unique by (source address, source port, server address,
//! server port), so towards one server address each source address has the ephemeral range's
//! ports (`net.ipv4.ip_local_port_range`, 32768–60999 by default). Linux's connect() searches them
//! in two passes (`__inet_hash_connect` in `net/ipv4/inet_hashtables.c`): first the ports of the
//! range start's parity — the "even" ports, 14,116 of the default range; bind() prefers the other
//! parity — probing one by one from a per-destination offset, and only after a full first pass
//! the other parity. As the first pass's ports fill, each connect probes longer runs of taken
//! ports under the port-hash locks; near full it walks all of them before each connect. Measured
//! on a 2-core box: 79 source addresses stalled a 2M ramp at ~1.04M connections (~13.2k per
//! address, 93% of the even ports) with 100% system CPU in that search, while 1,020 addresses
//! (~2k each) held 2M without an error.
//!
//! The budget: at most **a quarter of the first-pass ports** per (source, server) address pair
//! ([`FILL_NUMERATOR`]/[`FILL_DENOMINATOR`]), 3,529 with the default range. The search behaves
//! like linear probing, whose expected probes per insert are about ½(1 + 1/(1−f)²) at fill f:
//! 1.4 at a quarter, against ~100 at the 93% where the ramp stalled. Fill alone does not explain
//! that stall — one address filled to 99% of its first-pass ports here (14,000 connections, no
//! other address in use) connected without one, at ~1.8× the load generator's CPU per user of
//! the first thousand — so the stall grows with the number of connections in the kernel as well,
//! and the margin stays within 2× of the fill known to hold 2M (~2k per address, 14%), not at
//! the edge of the single-address test. It costs nothing on loopback (the pool has 64,770
//! addresses; 2M users take 567), and leaves room for other programs' sockets and TIME_WAIT
//! leftovers of an earlier run.
//!
//! The default loopback pool, used when the server is on 127.0.0.0/8 and no `--source` is given:
//! 127.0.1.1–127.0.255.254 in /24 order, skipping each /24's `.0` and `.255` and the server's own
//! address. Linux routes all of 127.0.0.0/8 to `lo` (no configuration needed); 127.0.0.x is left
//! alone because local services and resolvers live there.
//!
//! With `--procs N` each process binds its own contiguous, disjoint slice of the addresses, and
//! spreads its users over the slice round-robin by their rank among the process's users.

use std::net::Ipv4Addr;

use serde::Serialize;

use super::engine::arrivals::share;

/// Share of an address's first-pass ephemeral ports one run may use (see the module docs).
pub const FILL_NUMERATOR: u64 = 1;
pub const FILL_DENOMINATOR: u64 = 4;
/// Where the kernel keeps the ephemeral range.
pub const PORT_RANGE_PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";
/// Test and experiment knob: replaces the computed connections-per-address budget (the tests
/// shrink it so a few users need several addresses; an experiment can raise it to find the
/// stall). Not for production runs.
pub const BUDGET_ENV: &str = "RINGGATE_LOAD_PORTS_PER_SOURCE";

/// How many connections one source address may carry towards one server address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub per_address: u64,
    /// The ephemeral range, inclusive.
    pub range: (u16, u16),
    /// Ports connect() tries in its first pass.
    pub first_pass_ports: u64,
    /// `per_address` came from [`BUDGET_ENV`].
    pub overridden: bool,
}

/// Parses `ip_local_port_range` (`"32768\t60999\n"`).
pub fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Ok((lo, hi)),
        _ => Err(format!("{PORT_RANGE_PATH}: cannot parse {text:?}")),
    }
}

/// Ports of the range start's parity in `lo..=hi`: what connect()'s first pass probes (the
/// kernel rounds the range's length down to even and steps by two).
pub fn first_pass_ports(lo: u16, hi: u16) -> u64 {
    let len = u64::from(hi) - u64::from(lo) + 1;
    if len <= 1 {
        return len;
    }
    (len & !1) / 2
}

impl Budget {
    /// The budget for an ephemeral range, with the module's margin.
    pub fn for_range(lo: u16, hi: u16) -> Self {
        let first = first_pass_ports(lo, hi);
        Self {
            per_address: (first * FILL_NUMERATOR / FILL_DENOMINATOR).max(1),
            range: (lo, hi),
            first_pass_ports: first,
            overridden: false,
        }
    }

    /// This box's budget: its ephemeral range, or [`BUDGET_ENV`] when set.
    pub fn of_this_box() -> Result<Self, String> {
        let text = std::fs::read_to_string(PORT_RANGE_PATH)
            .map_err(|e| format!("cannot read {PORT_RANGE_PATH}: {e}"))?;
        let (lo, hi) = parse_port_range(&text)?;
        let mut b = Self::for_range(lo, hi);
        if let Ok(v) = std::env::var(BUDGET_ENV) {
            b.per_address = v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{BUDGET_ENV}={v:?}: expected a positive integer"))?;
            b.overridden = true;
        }
        Ok(b)
    }

    /// Why the budget is what it is, for messages.
    fn why(&self) -> String {
        if self.overridden {
            format!("{} per address, set by {BUDGET_ENV}", self.per_address)
        } else {
            format!(
                "≤ {} per address: a quarter of the {} ports connect() tries first in {}-{}; past that \
                 it stalls in the kernel's port search",
                self.per_address, self.first_pass_ports, self.range.0, self.range.1
            )
        }
    }
}

/// How the run's addresses were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `--source`.
    Given,
    /// From the default loopback pool.
    Auto,
    /// None bound: the kernel picks the source address.
    Kernel,
}

/// The run's source addresses and how users map onto them.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    /// Every process's addresses; process `p` binds [`Plan::slice`]`(p)` of them.
    pub addrs: Vec<Ipv4Addr>,
    pub budget: Budget,
    /// Most users one address carries over the run.
    pub most_per_address: u64,
    /// A line for the user (the automatic choice, or a warning); printed by the parent only.
    pub note: Option<String>,
    procs: u32,
    workers_per_proc: u32,
}

/// `summary.json`'s `sources`.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub mode: Mode,
    pub addresses: usize,
    /// The addresses as ranges (`a-b,c-d`), or first and last when they are many runs.
    pub ranges: String,
    pub per_address_budget: u64,
    pub most_users_per_address: u64,
    pub ephemeral_ports: String,
}

/// Users process `p` of `procs` starts (each with `workers` workers).
pub fn proc_users(users: u64, p: u32, procs: u32, workers: u32) -> u64 {
    let g = u64::from(procs) * u64::from(workers);
    (0..u64::from(workers))
        .map(|w| share(users, u64::from(p) * u64::from(workers) + w, g))
        .sum()
}

/// Most users on one of `n` addresses (process 0 has the most users and the largest slice).
fn most_per_address(users: u64, n: usize, procs: u32, workers: u32) -> u64 {
    if n == 0 {
        return users;
    }
    if n < procs as usize {
        return users.div_ceil(n as u64);
    }
    let slice = share(n as u64, 0, u64::from(procs));
    proc_users(users, 0, procs, workers).div_ceil(slice)
}

/// Addresses needed so that no address carries more than the budget: the same count for every
/// process, enough for the busiest.
pub fn needed(users: u64, budget: u64, procs: u32, workers: u32) -> u64 {
    if users <= budget {
        return 1;
    }
    proc_users(users, 0, procs, workers).div_ceil(budget) * u64::from(procs)
}

/// Whether `ip` is on the loopback network.
pub fn is_loopback(ip: Ipv4Addr) -> bool {
    ip.octets()[0] == 127
}

/// Addresses in the default loopback pool.
pub const POOL_SIZE: u64 = 255 * 254;

/// The first `count` addresses of the default loopback pool, skipping `server`.
pub fn loopback_pool(server: Ipv4Addr, count: u64) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::with_capacity(count as usize);
    'outer: for third in 1..=255u8 {
        for fourth in 1..=254u8 {
            if out.len() as u64 >= count {
                break 'outer;
            }
            let ip = Ipv4Addr::new(127, 0, third, fourth);
            if ip != server {
                out.push(ip);
            }
        }
    }
    if (out.len() as u64) < count {
        return Err(format!(
            "{count} source addresses needed, but the loopback pool 127.0.1.1-127.0.255.254 has \
             {}: split the run over several load boxes",
            out.len()
        ));
    }
    Ok(out)
}

/// Consecutive addresses as `a-b` runs, comma-separated; with more than `max_runs` runs just the
/// first and last address and the count.
pub fn ranges(addrs: &[Ipv4Addr], max_runs: usize) -> String {
    let mut runs: Vec<(Ipv4Addr, Ipv4Addr)> = Vec::new();
    for &ip in addrs {
        match runs.last_mut() {
            Some((_, hi)) if u32::from(*hi).checked_add(1) == Some(u32::from(ip)) => *hi = ip,
            _ => runs.push((ip, ip)),
        }
    }
    let one = |(lo, hi): &(Ipv4Addr, Ipv4Addr)| {
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        }
    };
    if runs.len() <= max_runs {
        return runs.iter().map(one).collect::<Vec<_>>().join(",");
    }
    format!(
        "{} … {} ({} runs)",
        addrs[0],
        addrs[addrs.len() - 1],
        runs.len()
    )
}

/// Chooses or checks the run's source addresses.
///
/// - `--source` given: enough for the users, or an error naming the fix (a run that would stall
///   must not start). When sessions end before the run does (`hold` false) the run's users
///   overstate the connections open at once, so a warning instead.
/// - No `--source`, loopback server, more users than one address takes: the first addresses of
///   the default pool, and a note saying how many and why.
/// - Otherwise the kernel picks the source; for a remote server with more users than one address
///   takes, a warning.
pub fn plan(
    given: Option<Vec<Ipv4Addr>>,
    server: Ipv4Addr,
    users: u64,
    hold: bool,
    procs: u32,
    workers: u32,
    budget: Budget,
) -> Result<Plan, String> {
    let need = needed(users, budget.per_address, procs, workers);
    let mut plan = Plan {
        mode: Mode::Kernel,
        addrs: Vec::new(),
        budget,
        most_per_address: users,
        note: None,
        procs,
        workers_per_proc: workers,
    };
    if let Some(addrs) = given {
        let most = most_per_address(users, addrs.len(), procs, workers);
        if most > budget.per_address {
            let fix = if is_loopback(server) {
                let pool = loopback_pool(server, need)?;
                format!(
                    "pass --source {} or drop --source to let ringgate load choose",
                    ranges(&pool, 4)
                )
            } else {
                format!("pass --source with at least {need} local addresses")
            };
            let what = format!(
                "--source gives {} address(es) for {users} users over {procs} process(es): up to \
                 {most} connections on one address, but {}. {need} addresses are needed: {fix}",
                addrs.len(),
                budget.why()
            );
            if hold {
                return Err(what);
            }
            plan.note = Some(format!(
                "warning: {what} (this scenario's sessions end before the run does, so fewer \
                 may be open at once; a closed connection's port stays in TIME_WAIT for 60 s)"
            ));
        }
        plan.mode = Mode::Given;
        plan.most_per_address = most;
        plan.addrs = addrs;
        return Ok(plan);
    }
    if users <= budget.per_address {
        return Ok(plan);
    }
    if !is_loopback(server) {
        plan.note = Some(format!(
            "warning: {users} users to {server} from one source address, but {}: pass --source \
             with at least {need} local addresses",
            budget.why()
        ));
        return Ok(plan);
    }
    let addrs = loopback_pool(server, need)?;
    plan.most_per_address = most_per_address(users, addrs.len(), procs, workers);
    plan.note = Some(format!(
        "{users} users need {need} source addresses ({}): binding {} (chosen automatically; \
         --source chooses others)",
        budget.why(),
        ranges(&addrs, 4)
    ));
    plan.mode = Mode::Auto;
    plan.addrs = addrs;
    Ok(plan)
}

impl Plan {
    /// The addresses process `p` binds: a contiguous slice, disjoint from the other processes'
    /// (all of them when there are fewer addresses than processes).
    pub fn slice(&self, p: u32) -> &[Ipv4Addr] {
        let n = self.addrs.len() as u64;
        let procs = u64::from(self.procs);
        if n < procs {
            return &self.addrs;
        }
        let start: u64 = (0..u64::from(p)).map(|i| share(n, i, procs)).sum();
        let len = share(n, u64::from(p), procs);
        &self.addrs[start as usize..(start + len) as usize]
    }

    /// What process `p`'s engine needs to map users onto its slice.
    pub fn map_for(&self, p: u32) -> SourceMap {
        SourceMap {
            addrs: self
                .slice(p)
                .iter()
                .map(|ip| super::target::sockaddr(*ip, 0))
                .collect(),
            shared: (self.addrs.len() as u64) < u64::from(self.procs),
            proc_index: p,
            workers_per_proc: self.workers_per_proc,
            total_workers: self.workers_per_proc * self.procs,
        }
    }

    pub fn meta(&self) -> Meta {
        Meta {
            mode: self.mode,
            addresses: self.addrs.len(),
            ranges: ranges(&self.addrs, 8),
            per_address_budget: self.budget.per_address,
            most_users_per_address: self.most_per_address,
            ephemeral_ports: format!("{}-{}", self.budget.range.0, self.budget.range.1),
        }
    }
}

/// One process's source addresses and the rule that picks a user's.
#[derive(Debug, Clone)]
pub struct SourceMap {
    pub addrs: Vec<libc::sockaddr_in>,
    /// Fewer addresses than processes: every process uses all of them, by user id.
    shared: bool,
    proc_index: u32,
    workers_per_proc: u32,
    total_workers: u32,
}

impl SourceMap {
    /// Index into `addrs` of run user `id` (before `--first-user-id`), or `None`: the kernel
    /// picks.
    pub fn index(&self, id: u64) -> Option<usize> {
        let n = self.addrs.len() as u64;
        if n == 0 {
            return None;
        }
        if self.shared {
            return Some((id % n) as usize);
        }
        Some(
            (rank_in_proc(
                id,
                self.proc_index,
                self.workers_per_proc,
                self.total_workers,
            ) % n) as usize,
        )
    }
}

/// The position of run user `id` among process `p`'s users: worker `g` starts ids `g, g+G, ...`
/// (`arrivals`), and process `p` runs workers `p·W .. p·W+W`, so its users are dense in this rank.
pub fn rank_in_proc(id: u64, p: u32, workers_per_proc: u32, total_workers: u32) -> u64 {
    let g_total = u64::from(total_workers);
    let w = u64::from(workers_per_proc);
    let g = id % g_total;
    (id / g_total) * w + g.saturating_sub(u64::from(p) * w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn budget_of_the_default_range() {
        assert_eq!(parse_port_range("32768\t60999\n").unwrap(), (32768, 60999));
        assert!(parse_port_range("60999 32768").is_err());
        assert!(parse_port_range("x").is_err());
        // 28,232 ports; connect's first pass takes every other one.
        assert_eq!(first_pass_ports(32768, 60999), 14_116);
        assert_eq!(first_pass_ports(1024, 65535), 32_256);
        assert_eq!(first_pass_ports(40000, 40000), 1);
        assert_eq!(first_pass_ports(40000, 40002), 1);
        let b = Budget::for_range(32768, 60999);
        assert_eq!(b.per_address, 3_529);
        // 2M users from one process: 567 addresses; from two (60 workers each): process 0 has
        // 1,000,020 users, so 284 each.
        assert_eq!(needed(2_000_000, b.per_address, 1, 8), 567);
        assert_eq!(needed(2_000_000, b.per_address, 2, 60), 568);
        // 1M users, 3 processes: 333,334 on process 0 → 95 each.
        assert_eq!(needed(1_000_000, b.per_address, 3, 1), 285);
        assert_eq!(needed(3_529, b.per_address, 4, 1), 1);
        assert_eq!(needed(3_530, b.per_address, 1, 1), 2);
    }

    #[test]
    fn proc_users_add_up() {
        for (users, procs, workers) in [(10, 3, 2), (1_000_001, 4, 7), (5, 8, 1)] {
            let total: u64 = (0..procs)
                .map(|p| proc_users(users, p, procs, workers))
                .sum();
            assert_eq!(total, users);
        }
        assert_eq!(proc_users(10, 0, 3, 2), 4);
        assert_eq!(proc_users(10, 2, 3, 2), 2);
    }

    #[test]
    fn pool_skips_network_broadcast_and_server() {
        let p = loopback_pool(ip("127.0.0.1"), 300).unwrap();
        assert_eq!(p[0], ip("127.0.1.1"));
        assert_eq!(p[253], ip("127.0.1.254"));
        assert_eq!(p[254], ip("127.0.2.1"));
        assert_eq!(p.len(), 300);
        assert!(p.iter().all(|a| a.octets()[3] != 0 && a.octets()[3] != 255));
        let p = loopback_pool(ip("127.0.1.2"), 3).unwrap();
        assert_eq!(p, vec![ip("127.0.1.1"), ip("127.0.1.3"), ip("127.0.1.4")]);
        assert_eq!(
            loopback_pool(ip("127.0.0.1"), POOL_SIZE).unwrap().len() as u64,
            POOL_SIZE
        );
        assert!(loopback_pool(ip("127.0.1.1"), POOL_SIZE)
            .unwrap_err()
            .contains("has 64769"));
        assert_eq!(
            ranges(&loopback_pool(ip("127.0.0.1"), 300).unwrap(), 4),
            "127.0.1.1-127.0.1.254,127.0.2.1-127.0.2.46"
        );
        assert_eq!(
            ranges(&loopback_pool(ip("127.0.0.1"), 2000).unwrap(), 4),
            "127.0.1.1 … 127.0.8.222 (8 runs)"
        );
        assert_eq!(ranges(&[ip("10.0.0.1")], 4), "10.0.0.1");
    }

    #[test]
    fn loopback_without_source_chooses_enough() {
        let b = Budget::for_range(32768, 60999);
        let server = ip("127.0.0.1");
        // Few users: the kernel picks, nothing bound, nothing said.
        let p = plan(None, server, 3_500, true, 2, 1, b).unwrap();
        assert_eq!(
            (p.mode, p.addrs.len(), p.note.is_none()),
            (Mode::Kernel, 0, true)
        );
        let p = plan(None, server, 2_000_000, true, 2, 60, b).unwrap();
        assert_eq!(p.mode, Mode::Auto);
        assert_eq!(p.addrs.len(), 568);
        assert_eq!(p.most_per_address, 3_522);
        let note = p.note.clone().unwrap();
        assert!(
            note.starts_with("2000000 users need 568 source addresses"),
            "{note}"
        );
        assert!(
            note.contains("127.0.1.1-127.0.1.254,127.0.2.1-127.0.2.254,127.0.3.1-127.0.3.60"),
            "{note}"
        );
        // Disjoint slices that cover every address.
        let (a, c) = (p.slice(0), p.slice(1));
        assert_eq!((a.len(), c.len()), (284, 284));
        assert_eq!(a[283], ip("127.0.2.30"));
        assert_eq!(c[0], ip("127.0.2.31"));
        assert!(a.iter().all(|x| !c.contains(x)));
    }

    #[test]
    fn too_few_given_addresses_is_an_error_with_the_fix() {
        let b = Budget::for_range(32768, 60999);
        let given = parse("127.0.0.2-127.0.0.80");
        let e = plan(
            Some(given.clone()),
            ip("127.0.0.1"),
            2_000_000,
            true,
            2,
            60,
            b,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "--source gives 79 address(es) for 2000000 users over 2 process(es): up to 25001 \
             connections on one address, but ≤ 3529 per address: a quarter of the 14116 ports \
             connect() tries first in 32768-60999; past that it stalls in the kernel's port \
             search. 568 addresses are needed: pass --source \
             127.0.1.1-127.0.1.254,127.0.2.1-127.0.2.254,127.0.3.1-127.0.3.60 or drop --source \
             to let ringgate load \
             choose"
        );
        let e = plan(
            Some(vec![ip("10.0.0.9")]),
            ip("10.0.0.5"),
            8_000,
            true,
            1,
            1,
            b,
        )
        .unwrap_err();
        assert!(
            e.ends_with("pass --source with at least 3 local addresses"),
            "{e}"
        );
        let p = plan(
            Some(parse("127.0.0.2-127.0.0.3")),
            ip("127.0.0.1"),
            7_000,
            true,
            1,
            2,
            b,
        )
        .unwrap();
        assert_eq!(
            (p.mode, p.most_per_address, p.note),
            (Mode::Given, 3_500, None)
        );
        // Sessions that end before the run (churn): the run's users overstate what is open at
        // once, so the same finding is a warning and the run starts.
        let p = plan(Some(given), ip("127.0.0.1"), 2_000_000, false, 2, 60, b).unwrap();
        assert_eq!((p.mode, p.addrs.len()), (Mode::Given, 79));
        let note = p.note.unwrap();
        assert!(
            note.starts_with("warning: --source gives 79 address(es)"),
            "{note}"
        );
        assert!(note.ends_with("stays in TIME_WAIT for 60 s)"), "{note}");
    }

    #[test]
    fn remote_server_without_source_warns() {
        let b = Budget::for_range(32768, 60999);
        let p = plan(None, ip("10.0.0.5"), 100_000, true, 1, 2, b).unwrap();
        assert_eq!(p.mode, Mode::Kernel);
        assert!(p.addrs.is_empty());
        let note = p.note.unwrap();
        assert!(note.starts_with("warning: 100000 users to 10.0.0.5 from one source address"));
        assert!(note.ends_with("at least 29 local addresses"), "{note}");
    }

    fn parse(s: &str) -> Vec<Ipv4Addr> {
        super::super::target::parse_sources(s).unwrap()
    }

    /// Every user of every process lands on its own process's slice, evenly.
    #[test]
    fn users_spread_evenly_over_disjoint_slices() {
        let b = Budget {
            per_address: 5,
            ..Budget::for_range(32768, 60999)
        };
        for (users, procs, workers) in [(40u64, 2u32, 1u32), (103, 3, 2), (60, 1, 4), (23, 4, 1)] {
            let p = plan(None, ip("127.0.0.1"), users, true, procs, workers, b).unwrap();
            let g = u64::from(procs * workers);
            let mut per_addr = std::collections::HashMap::new();
            for id in 0..users {
                let proc = ((id % g) / u64::from(workers)) as u32;
                let map = p.map_for(proc);
                let i = map.index(id).unwrap();
                *per_addr.entry(p.slice(proc)[i]).or_insert(0u64) += 1;
            }
            let most = *per_addr.values().max().unwrap();
            assert!(most <= 5, "{users}/{procs}/{workers}: {per_addr:?}");
            assert_eq!(most, p.most_per_address, "{users}/{procs}/{workers}");
            assert_eq!(per_addr.len(), p.addrs.len(), "every address used");
        }
        // Fewer given addresses than processes: shared, by user id.
        let p = plan(Some(parse("127.0.0.2")), ip("127.0.0.1"), 4, true, 2, 1, b).unwrap();
        assert_eq!(p.slice(1), &[ip("127.0.0.2")]);
        assert_eq!(p.map_for(1).index(3), Some(0));
    }
}
