//! Rows for the limits that cap how many connections the box can hold: descriptors (per ring and
//! system-wide), memory, connection tracking and, on a load box, source ports.

use super::assess::{bytes, n, round_up, sysctl, Ctx, Row, Status};
use super::cost;
use super::Role;

pub fn rows(c: &Ctx) -> Vec<Row> {
    let mut rows = nofile(c);
    rows.push(nr_open(c));
    rows.push(max_fixed_files(c));
    if c.gateway_on_box {
        rows.push(per_worker(c));
    }
    rows.push(file_max(c));
    rows.push(memory(c));
    rows.extend(cgroup_memory(c));
    rows.extend(conntrack(c));
    rows.push(ports(c));
    rows
}

fn nofile(c: &Ctx) -> Vec<Row> {
    let (soft_name, hard_name) = ("RLIMIT_NOFILE soft", "RLIMIT_NOFILE hard");
    let Some(limit) = c.facts.nofile else {
        return vec![
            Row::unreadable("nofile_soft", soft_name),
            Row::unreadable("nofile_hard", hard_name),
        ];
    };
    let w = c.plan.workers;
    let want = c.nofile_wanted();
    let value = |v: Option<u64>| v.map_or("unlimited".into(), n);
    let allows = |v: Option<u64>| v.map_or(u64::MAX, |v| v.saturating_mul(w));
    let hard = limit.hard.unwrap_or(u64::MAX);

    let mut soft_fix = Vec::new();
    if want <= hard {
        soft_fix.push(format!(
            "ulimit -n {want} in the shell that starts ringgate (the soft limit may rise to the \
             hard limit, {}, without privilege); it is gone after a restart, so a service sets \
             LimitNOFILE= in its unit",
            n(hard)
        ));
    } else {
        soft_fix.push(format!(
            "ulimit -n cannot go past the hard limit ({}): lift RLIMIT_NOFILE hard first",
            n(hard)
        ));
    }
    soft_fix.extend(c.more_workers());
    let soft_row = Row::cap(
        "nofile_soft",
        soft_name,
        value(limit.soft),
        allows(limit.soft),
        c.target(),
    )
    .detail(format!(
        "each ring's fixed-file table holds at most the soft limit (per ring, not per process): \
         {w} worker(s) × {} = {}{}",
        value(limit.soft),
        n(allows(limit.soft)),
        if c.plan.role == Role::Both {
            "; the load generator, a process of its own, needs as many rings"
        } else {
            ""
        }
    ))
    .fix(soft_fix);

    let mut hard_fix = vec![
        format!("systemd: LimitNOFILE={want} under [Service] (kernel-tuning/systemd/ringgate.service)"),
        format!(
            "login shells: `* soft nofile {want}` and `* hard nofile {want}` in \
             /etc/security/limits.d/90-ringgate.conf (kernel-tuning/limits.d/), then log in again"
        ),
        format!("a running shell, as root with CAP_SYS_RESOURCE: prlimit --pid $$ --nofile={want}:{want}"),
        format!("containers: docker run --ulimit nofile={want}:{want}"),
    ];
    if c.facts.nr_open.is_some_and(|nr| want > nr) {
        hard_fix.insert(
            0,
            "first raise fs.nr_open: no hard limit can exceed it".into(),
        );
    }
    if c.facts.cap_sys_resource() == Some(false) {
        hard_fix.push(
            "this process lacks CAP_SYS_RESOURCE, so it cannot raise its own hard limit".into(),
        );
    }
    hard_fix.extend(c.more_workers());
    let hard_row = Row::cap(
        "nofile_hard",
        hard_name,
        value(limit.hard),
        allows(limit.hard),
        c.target(),
    )
    .detail(format!(
        "the soft limit can be raised only up to here without privilege: {w} × {}",
        value(limit.hard)
    ))
    .fix(hard_fix);
    vec![soft_row, hard_row]
}

fn nr_open(c: &Ctx) -> Row {
    let name = "fs.nr_open";
    let Some(nr) = c.facts.nr_open else {
        return Row::unreadable(name, name);
    };
    let w = c.plan.workers;
    let want = c.nofile_wanted();
    Row::cap(name, name, n(nr), nr.saturating_mul(w), c.target())
        .detail(format!(
            "ceiling of any RLIMIT_NOFILE (setrlimit fails above it): {w} × {}",
            n(nr)
        ))
        .fix(sysctl(name, &want.to_string()))
        .fix(c.more_workers())
}

fn max_fixed_files(c: &Ctx) -> Row {
    let per_ring = cost::IORING_MAX_FIXED_FILES;
    let k = c.target().div_ceil(per_ring);
    Row::cap(
        "io_uring_max_fixed_files",
        "io_uring fixed files per ring",
        n(per_ring),
        per_ring.saturating_mul(c.plan.workers),
        c.target(),
    )
    .detail("kernel constant IORING_MAX_FIXED_FILES: one ring's table never exceeds it")
    .fix([format!(
        "run with --workers {k} or more (each ring holds at most {})",
        n(per_ring)
    )])
}

fn per_worker(c: &Ctx) -> Row {
    let m = c.plan.max_connections_per_worker;
    let w = c.plan.workers;
    let want = c.target().div_ceil(w);
    let mut fix = vec![format!(
        "--max-connections-per-worker {want} (config key max_connections_per_worker)"
    )];
    fix.extend(c.more_workers());
    Row::cap(
        "max_connections_per_worker",
        "max_connections_per_worker",
        n(m),
        m.saturating_mul(w),
        c.target(),
    )
    .detail(format!(
        "ringgate's fixed-file table size per worker: {w} × {}",
        n(m)
    ))
    .fix(fix)
}

fn file_max(c: &Ctx) -> Row {
    let name = "fs.file-max";
    let (Some(max), Some(used)) = (c.facts.file_max, c.facts.files_allocated) else {
        return Row::unreadable(name, name);
    };
    let per_conn = if c.plan.role == Role::Both { 2 } else { 1 };
    let free = max.saturating_sub(used);
    let mut detail = format!(
        "system-wide file objects; a direct descriptor still has one: {} free / {per_conn} per \
         connection",
        n(free)
    );
    if c.facts.cap_sys_admin() == Some(true) {
        detail.push_str(
            " (this process has CAP_SYS_ADMIN, which the kernel exempts; a service without it is \
             capped)",
        );
    }
    let want = round_up((used + c.target() * per_conn) * 11 / 10);
    Row::cap(
        name,
        name,
        format!("{} ({} in use)", n(max), n(used)),
        free / per_conn,
        c.target(),
    )
    .detail(detail)
    .fix(sysctl(name, &want.to_string()))
}

/// The connections `available` bytes hold after the workers' fixed cost.
fn fit(c: &Ctx, available: u64) -> u64 {
    let fixed = c.per_worker_bytes.saturating_mul(c.plan.workers);
    available.saturating_sub(fixed) / c.per_connection.total_bytes
}

fn memory_detail(c: &Ctx) -> String {
    let p = c.per_connection;
    let client = if p.client_bytes > 0 {
        format!(" + load generator's side {}", p.client_bytes)
    } else {
        String::new()
    };
    format!(
        "{} B per connection (kernel socket {} + idle wait {} + user {}{client}) and {} per \
         worker (rings, fixed-file table, posted buffers)",
        p.total_bytes,
        p.socket_kernel_bytes,
        p.wait_kernel_bytes,
        p.user_bytes,
        bytes(c.per_worker_bytes)
    )
}

fn memory_fix(c: &Ctx, have: u64) -> Vec<String> {
    let need = c.target() * c.per_connection.total_bytes + c.per_worker_bytes * c.plan.workers;
    let mut fix = vec![format!(
        "{} connections need about {}; {} is available: add memory or lower the target",
        n(c.target()),
        bytes(need),
        bytes(have)
    )];
    if c.per_connection.wait_kernel_bytes == cost::MULTISHOT_WAIT_BYTES {
        fix.push(format!(
            "--recv-mode poll saves {} B per connection",
            cost::MULTISHOT_WAIT_BYTES - cost::POLL_WAIT_BYTES
        ));
    }
    if c.plan.role == Role::Both {
        fix.push("run the load generator on another box (role gateway here)".into());
    }
    fix
}

fn memory(c: &Ctx) -> Row {
    let (Some(total), Some(avail)) = (c.facts.mem_total_bytes, c.facts.mem_available_bytes) else {
        return Row::unreadable("memory", "memory (MemAvailable)");
    };
    Row::cap(
        "memory",
        "memory (MemAvailable)",
        format!("{} of {}", bytes(avail), bytes(total)),
        fit(c, avail),
        c.target(),
    )
    .detail(memory_detail(c))
    .fix(memory_fix(c, avail))
}

fn cgroup_memory(c: &Ctx) -> Option<Row> {
    let cg = c.facts.cgroup_memory.as_ref()?;
    let name = "cgroup memory limit";
    let Some(limit) = cg.limit_bytes else {
        return Some(
            Row::note("cgroup_memory", name, "none".into(), Status::Ok)
                .detail(format!("{}: no limit", cg.file)),
        );
    };
    let have = limit.saturating_sub(cg.usage_bytes.unwrap_or(0));
    let mut fix = vec![
        format!("systemd: MemoryMax= in the unit (now {})", bytes(limit)),
        "containers: docker run --memory=...".into(),
    ];
    fix.extend(memory_fix(c, have));
    Some(
        Row::cap(
            "cgroup_memory",
            name,
            bytes(limit),
            fit(c, have),
            c.target(),
        )
        .detail(format!(
            "{} (in use {}): {}",
            cg.file,
            bytes(cg.usage_bytes.unwrap_or(0)),
            memory_detail(c)
        ))
        .fix(fix),
    )
}

fn conntrack(c: &Ctx) -> Option<Row> {
    let ct = c.facts.conntrack?;
    let key = "net.netfilter.nf_conntrack_max";
    let value = format!("{} ({} tracked)", n(ct.max), n(ct.count));
    let want = round_up((ct.count + c.target()) * 11 / 10).to_string();
    let port = c.plan.listen_port;
    let mut fix = sysctl(key, &want).to_vec();
    fix.push(format!(
        "size the hash table to match: echo {want} > /sys/module/nf_conntrack/parameters/hashsize"
    ));
    fix.push(format!(
        "or exempt the gateway port from tracking: nft add table inet raw; nft add chain inet raw \
         pre '{{ type filter hook prerouting priority raw; }}'; nft add rule inet raw pre tcp \
         dport {port} notrack; nft add chain inet raw out '{{ type filter hook output priority \
         raw; }}'; nft add rule inet raw out tcp sport {port} notrack"
    ));
    if ct.count == 0 {
        // Loaded but unhooked: no ruleset asks for connection state, so nothing is tracked.
        let status = if ct.max < c.target() {
            Status::Warn
        } else {
            Status::Info
        };
        return Some(
            Row::note(key, "nf_conntrack_max", value, status)
                .detail(format!(
                    "module loaded but tracking nothing (no firewall rule uses it); a rule that \
                     does would cap connections at {}",
                    n(ct.max)
                ))
                .fix(fix),
        );
    }
    Some(
        Row::cap(
            key,
            "nf_conntrack_max",
            value,
            ct.max.saturating_sub(ct.count),
            c.target(),
        )
        .detail("one tracked flow per connection; a full table drops new connections' SYNs")
        .fix(fix),
    )
}

fn ports(c: &Ctx) -> Row {
    let key = "net.ipv4.ip_local_port_range";
    let Some([lo, hi]) = c.facts.ip_local_port_range else {
        return Row::unreadable(key, key);
    };
    let ports = (hi + 1).saturating_sub(lo);
    let value = format!("{lo}-{hi} ({} ports)", n(ports));
    // What `ringgate load` puts on one source address before connect()'s port search gets
    // slow (docs/load-testing.md, "Source addresses"), not the whole range.
    let budget = crate::load::sources::Budget::for_range(
        lo.min(u64::from(u16::MAX)) as u16,
        hi.min(u64::from(u16::MAX)) as u16,
    );
    let per_addr = budget.per_address;
    if c.plan.role == Role::Gateway {
        return Row::note(key, key, value, Status::Info).detail(format!(
            "load boxes only: {} connections per source address to one server address",
            n(per_addr)
        ));
    }
    let addrs = c.plan.source_addrs;
    let k = c.target().div_ceil(per_addr.max(1));
    Row::cap(key, key, value, per_addr.saturating_mul(addrs), c.target())
        .detail(format!(
            "a client connection takes one ephemeral port per (source address, server address); \
         ringgate load keeps {} per address (a quarter of the {} ports connect() tries first, \
         past which its port search stalls) × {addrs} source address(es)",
            n(per_addr),
            n(budget.first_pass_ports)
        ))
        .fix([
            format!(
                "bind the load generator to {k} source addresses (127.0.0.2, 127.0.0.3, ... on \
             loopback need no setup; on a NIC: ip addr add 10.0.0.N/24 dev eth0 for each) and \
             rerun with --source-addrs {k}"
            ),
            "or widen the range, to at most 64,512 ports per address:".into(),
        ])
        .fix(sysctl(key, "1024 65535"))
}
