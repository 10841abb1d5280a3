//! Rows for what the gateway needs from the kernel (io_uring, its features, its settings) and for
//! the limits that shape bursts and broadcasts rather than the connection count: accept and SYN
//! queues, TCP buffer memory, TIME_WAIT reuse, cores.

use super::assess::{bytes, n, sysctl, Ctx, Row, Status};
use super::cost;
use super::Role;

pub fn rows(c: &Ctx) -> Vec<Row> {
    let mut rows = vec![io_uring_disabled(c), kernel(c)];
    rows.extend(features(c));
    rows.push(memlock(c));
    if c.gateway_on_box {
        rows.push(somaxconn(c));
        rows.push(syn_backlog(c));
    }
    rows.push(tcp_mem(c));
    rows.push(tcp_buffers(c, "net.ipv4.tcp_rmem", c.facts.tcp_rmem_bytes));
    rows.push(tcp_buffers(c, "net.ipv4.tcp_wmem", c.facts.tcp_wmem_bytes));
    if c.plan.role != Role::Gateway {
        rows.push(tw_reuse(c));
    }
    rows.push(cores(c));
    rows
}

fn io_uring_disabled(c: &Ctx) -> Row {
    let key = "kernel.io_uring_disabled";
    let Some(v) = c.facts.io_uring_disabled else {
        return Row::note(key, key, "absent".into(), Status::Ok)
            .detail("kernel before 6.6: io_uring is enabled for every process");
    };
    let setup_ok = c
        .facts
        .io_uring_features
        .as_ref()
        .and_then(|f| f.first())
        .map(|f| f.missing.is_none());
    let group = c.facts.io_uring_group.unwrap_or(-1);
    let mut fix: Vec<String> = sysctl(key, "0").into();
    let row = match (v, setup_ok) {
        (0, _) => Row::note(key, key, "0".into(), Status::Ok).detail("io_uring enabled"),
        (1, Some(true)) => Row::note(key, key, "1".into(), Status::Ok).detail(format!(
            "io_uring limited to kernel.io_uring_group ({group}) and CAP_SYS_ADMIN; this process \
             may use it"
        )),
        (1, probed) => {
            fix.push(format!(
                "or put the service's group in it: sysctl -w kernel.io_uring_group=GID (now {group})"
            ));
            let detail = "io_uring limited to kernel.io_uring_group and CAP_SYS_ADMIN";
            match probed {
                Some(false) => Row::cap(key, key, "1".into(), 0, c.target()),
                _ => Row::note(key, key, "1".into(), Status::Warn),
            }
            .detail(detail)
        }
        (v, _) => Row::cap(key, key, v.to_string(), 0, c.target())
            .detail("io_uring disabled for every process"),
    };
    row.fix(fix)
}

fn kernel(c: &Ctx) -> Row {
    let key = "kernel";
    let release = c.facts.kernel_release.clone().unwrap_or("unknown".into());
    match c.facts.kernel_version() {
        Some(v) if v >= (6, 1) => Row::note(key, "kernel version", release, Status::Ok).detail(
            "6.1+ has every feature ringgate uses (SINGLE_ISSUER | DEFER_TASKRUN is the newest); \
             6.12 adds incremental buffer consumption",
        ),
        Some(_) => Row::cap(key, "kernel version", release, 0, c.target())
            .detail("ringgate needs 6.1 (DEFER_TASKRUN)")
            .fix(["upgrade the kernel to 6.1 or later".to_string()]),
        None => Row::unreadable(key, "kernel version"),
    }
}

fn features(c: &Ctx) -> Vec<Row> {
    let Some(features) = &c.facts.io_uring_features else {
        return vec![Row::note(
            "io_uring",
            "io_uring features",
            "not probed".into(),
            Status::Info,
        )];
    };
    features
        .iter()
        .map(|f| {
            let key = format!("io_uring: {}", f.feature);
            // The table shows the feature up to its first qualifier; the key keeps it whole.
            let name = f.feature.split([',', '(']).next().unwrap_or("").trim();
            match &f.missing {
                None => Row::note(&key, name, format!("yes (Linux {}+)", f.since), Status::Ok),
                Some(hint) if f.optional => {
                    Row::note(&key, name, "missing (optional)".into(), Status::Info)
                        .detail(format!(
                            "needs Linux {}+; only its setting, off by default, uses it",
                            f.since
                        ))
                        .fix([hint.clone()])
                }
                Some(hint) => Row::cap(&key, name, "missing".into(), 0, c.target())
                    .detail(format!("needs Linux {}+", f.since))
                    .fix([hint.clone()]),
            }
        })
        .collect()
}

fn memlock(c: &Ctx) -> Row {
    let key = "memlock";
    let name = "RLIMIT_MEMLOCK";
    let Some(limit) = c.facts.memlock else {
        return Row::unreadable(key, name);
    };
    let value = limit.soft.map_or("unlimited".into(), bytes);
    if c.facts.kernel_version().is_some_and(|v| v < (5, 12)) {
        return Row::note(key, name, value, Status::Warn)
            .detail("before 5.12 every ring's memory counts against it")
            .fix(["systemd: LimitMEMLOCK=infinity".to_string()]);
    }
    Row::note(key, name, value, Status::Ok).detail(
        "ring memory is charged to the memory cgroup since 5.12, not to this limit, and ringgate \
         registers no fixed buffers: it needs none",
    )
}

fn somaxconn(c: &Ctx) -> Row {
    let key = "net.core.somaxconn";
    let Some(v) = c.facts.somaxconn else {
        return Row::unreadable(key, key);
    };
    let backlog = c.plan.listen_backlog;
    let w = c.plan.workers;
    let status = if v < backlog {
        Status::Warn
    } else {
        Status::Ok
    };
    Row::note(key, key, n(v), status)
        .detail(format!(
            "accept queue per listener = min(listen_backlog {}, somaxconn); {w} listener(s) with \
             SO_REUSEPORT queue {} in all. A connect burst past it is dropped and retried by \
             clients after 1 s, 3 s, ...",
            n(backlog),
            n(w * v.min(backlog))
        ))
        .fix(sysctl(key, &backlog.max(65535).to_string()))
}

fn syn_backlog(c: &Ctx) -> Row {
    let key = "net.ipv4.tcp_max_syn_backlog";
    let Some(v) = c.facts.tcp_max_syn_backlog else {
        return Row::unreadable(key, key);
    };
    let cookies = c.facts.tcp_syncookies.unwrap_or(0);
    let status = if v < c.plan.listen_backlog && cookies == 0 {
        Status::Warn
    } else {
        Status::Ok
    };
    Row::note(key, key, n(v), status)
        .detail(format!(
            "half-open connections per listener; past it SYN cookies (tcp_syncookies = {cookies}) \
             take over"
        ))
        .fix(sysctl(key, &c.plan.listen_backlog.max(65535).to_string()))
}

fn tcp_mem(c: &Ctx) -> Row {
    let key = "net.ipv4.tcp_mem";
    let Some([min, pressure, max]) = c.facts.tcp_mem_pages else {
        return Row::unreadable(key, key);
    };
    let page = c.facts.page_bytes;
    let need = c.target() * cost::QUEUED_PAGES_PER_SOCKET;
    let status = if max < need { Status::Warn } else { Status::Ok };
    let value = format!("{min} {pressure} {max} pages");
    let want = format!("{min} {} {}", pressure.max(need), max.max(2 * need));
    Row::note(key, key, value, status)
        .detail(format!(
            "all TCP buffers together; idle sockets hold none, so it does not cap connections. A \
             socket with anything queued is charged a page: a broadcast queued at all {} at once \
             needs {} pages ({}); pressure starts at {} pages ({}), and past max ({}) sends wait \
             for readers",
            n(c.target()),
            n(need),
            bytes(need * page),
            n(pressure),
            bytes(pressure * page),
            bytes(max * page)
        ))
        .fix(sysctl(key, &want))
}

fn tcp_buffers(c: &Ctx, key: &str, v: Option<[u64; 3]>) -> Row {
    let Some([min, default, max]) = v else {
        return Row::unreadable(key, key);
    };
    Row::note(key, key, format!("{min} {default} {max}"), Status::Info).detail(format!(
        "per-socket buffer bounds (min, default, max bytes): they set one connection's throughput \
         ceiling; an idle socket holds none of it, and tcp_mem caps the sum. Default {} × {} \
         connections would be {} if every buffer filled",
        bytes(default),
        n(c.target()),
        bytes(default.saturating_mul(c.target()))
    ))
}

fn tw_reuse(c: &Ctx) -> Row {
    let key = "net.ipv4.tcp_tw_reuse";
    let Some(v) = c.facts.tcp_tw_reuse else {
        return Row::unreadable(key, key);
    };
    // 2 = reuse for loopback only (the default on current kernels): enough when load and gateway
    // share the box, not for a load box on a network.
    let ok = v == 1 || (v == 2 && c.plan.role == Role::Both);
    let status = if ok { Status::Ok } else { Status::Warn };
    Row::note(key, key, v.to_string(), status)
        .detail(
            "a closed client connection keeps its port in TIME_WAIT for 60 s; reuse lets a \
             reconnect storm take those ports again (1 = all, 2 = loopback only)",
        )
        .fix(sysctl(key, "1"))
}

fn cores(c: &Ctx) -> Row {
    let Some(cpus) = c.facts.cpus_online else {
        return Row::unreadable("cores", "cores");
    };
    let w = c.plan.workers;
    Row::note("cores", "cores", cpus.to_string(), Status::Info).detail(format!(
        "{w} worker(s) on {cpus} core(s): more workers than cores is fine for idle connections \
         (an idle ring costs no CPU); broadcast and accept throughput scale with cores"
    ))
}
