//! The verdict on hand-made boxes: each limit binding alone, with the fix it prints.

use super::assess::{assess, Plan, Report, Row, Status};
use super::cost::{self, PerConnection};
use super::facts::{Conntrack, Facts, Feature};
use super::parse::Rlimit;
use super::Role;
use crate::config::RecvMode;

/// A box where nothing binds a million connections: generous limits everywhere.
fn roomy() -> Facts {
    Facts {
        kernel_release: Some("6.18.44".into()),
        nofile: Some(Rlimit {
            soft: Some(1 << 20),
            hard: Some(1 << 20),
        }),
        memlock: Some(Rlimit {
            soft: Some(8 << 20),
            hard: Some(8 << 20),
        }),
        nr_open: Some(1 << 20),
        file_max: Some(10_000_000),
        files_allocated: Some(1_000),
        somaxconn: Some(65535),
        tcp_max_syn_backlog: Some(65535),
        tcp_syncookies: Some(1),
        ip_local_port_range: Some([1024, 65535]),
        tcp_mem_pages: Some([1_000_000, 2_000_000, 4_000_000]),
        tcp_rmem_bytes: Some([4096, 131_072, 6_291_456]),
        tcp_wmem_bytes: Some([4096, 16_384, 4_194_304]),
        tcp_tw_reuse: Some(1),
        conntrack: None,
        io_uring_disabled: Some(0),
        io_uring_group: Some(-1),
        cpus_online: Some(16),
        mem_total_bytes: Some(64 << 30),
        mem_available_bytes: Some(60 << 30),
        cgroup_memory: None,
        cap_eff: Some(0),
        page_bytes: 4096,
        io_uring_features: Some(vec![Feature {
            feature: "io_uring with SINGLE_ISSUER | DEFER_TASKRUN",
            since: "6.1",
            missing: None,
            optional: false,
        }]),
        unreadable: Vec::new(),
    }
}

fn plan(target: u64, workers: u64) -> Plan {
    Plan {
        target_connections: target,
        role: Role::Gateway,
        workers,
        max_connections_per_worker: 1 << 20,
        listen_backlog: 4096,
        listen_port: 4000,
        recv_mode: RecvMode::Poll,
        sq_entries: 4096,
        cq_entries: 65536,
        recv_buffer_bytes: 4096,
        source_addrs: 1,
    }
}

fn row<'a>(r: &'a Report, key: &str) -> &'a Row {
    r.limits
        .iter()
        .find(|l| l.key == key)
        .unwrap_or_else(|| panic!("no row {key}"))
}

fn binding(r: &Report) -> Vec<&str> {
    r.limits
        .iter()
        .filter(|l| l.status == Status::Binds)
        .map(|l| l.key.as_str())
        .collect()
}

#[test]
fn roomy_box_reaches_a_million() {
    let r = assess(roomy(), plan(1_000_000, 2));
    assert!(r.reachable, "{:?}", binding(&r));
    assert_eq!(binding(&r), Vec::<&str>::new());
    // 2 workers × 2^20 slots: the descriptor rows tie and the first listed is named.
    assert_eq!(r.max_connections, Some(2 << 20));
    assert_eq!(r.first_to_bind.as_deref(), Some("nofile_soft"));
    assert_eq!(r.slots_per_ring, Some(1 << 20));
    for l in &r.limits {
        assert!(
            l.fix.is_empty(),
            "{} has fixes though {:?}",
            l.key,
            l.status
        );
    }
}

#[test]
fn low_soft_limit_binds_with_ulimit_fix() {
    let mut f = roomy();
    f.nofile = Some(Rlimit {
        soft: Some(1024),
        hard: Some(1 << 20),
    });
    let r = assess(f, plan(1_000_000, 2));
    assert!(!r.reachable);
    assert_eq!(binding(&r), ["nofile_soft"]);
    assert_eq!(r.first_to_bind.as_deref(), Some("nofile_soft"));
    assert_eq!(r.max_connections, Some(2048));
    let soft = row(&r, "nofile_soft");
    assert_eq!(soft.allows, Some(2048));
    assert!(
        soft.fix[0].starts_with("ulimit -n 500000 in the shell"),
        "{:?}",
        soft.fix
    );
    // 977 workers × 1024 slots ≥ 1M, and 977 × 3 + 16 descriptors do not fit in 1024: no
    // workers suggestion.
    assert_eq!(soft.fix.len(), 1, "{:?}", soft.fix);
}

#[test]
fn low_hard_limit_names_every_persistent_fix() {
    let mut f = roomy();
    f.nofile = Some(Rlimit {
        soft: Some(20_000),
        hard: Some(20_000),
    });
    let r = assess(f, plan(1_000_000, 2));
    assert_eq!(binding(&r), ["nofile_soft", "nofile_hard"]);
    assert_eq!(r.first_to_bind.as_deref(), Some("nofile_soft"));
    let soft = row(&r, "nofile_soft");
    assert_eq!(
        soft.fix,
        [
            "ulimit -n cannot go past the hard limit (20,000): lift RLIMIT_NOFILE hard first",
            "or run with --workers 50, so that 50 × 20,000 ≥ 1,000,000 (one ring per worker; an \
             idle ring costs no CPU; the memory row counts 1.8 MiB per worker)"
        ]
    );
    let hard = row(&r, "nofile_hard");
    assert!(hard.fix.contains(
        &"systemd: LimitNOFILE=500000 under [Service] (kernel-tuning/systemd/ringgate.service)"
            .to_string()
    ));
    assert!(hard
        .fix
        .iter()
        .any(|f| f.contains("`* hard nofile 500000`")));
    assert!(hard.fix.contains(
        &"this process lacks CAP_SYS_RESOURCE, so it cannot raise its own hard limit".to_string()
    ));
    // The workers suggestion really lifts it.
    let mut f = roomy();
    f.nofile = Some(Rlimit {
        soft: Some(20_000),
        hard: Some(20_000),
    });
    let r = assess(f, plan(1_000_000, 50));
    assert!(r.reachable, "{:?}", binding(&r));
    assert_eq!(r.max_connections, Some(1_000_000));
}

#[test]
fn nr_open_below_the_wanted_limit_comes_first_in_the_hard_fix() {
    let mut f = roomy();
    f.nofile = Some(Rlimit {
        soft: Some(1024),
        hard: Some(4096),
    });
    f.nr_open = Some(100_000);
    let r = assess(f, plan(1_000_000, 4));
    assert_eq!(binding(&r), ["nofile_soft", "nofile_hard", "fs.nr_open"]);
    let hard = row(&r, "nofile_hard");
    assert_eq!(
        hard.fix[0],
        "first raise fs.nr_open: no hard limit can exceed it"
    );
    let nr = row(&r, "fs.nr_open");
    assert_eq!(nr.allows, Some(400_000));
    assert_eq!(nr.fix[0], "sysctl -w fs.nr_open=250000");
    assert_eq!(
        nr.fix[1],
        "keep it after reboot: `fs.nr_open = 250000` in /etc/sysctl.d/90-ringgate.conf \
         (kernel-tuning/sysctl.d/)"
    );
}

#[test]
fn one_ring_never_holds_more_than_the_kernel_constant() {
    let mut f = roomy();
    f.nofile = Some(Rlimit {
        soft: Some(4 << 20),
        hard: Some(4 << 20),
    });
    f.nr_open = Some(4 << 20);
    let mut p = plan(2_000_000, 1);
    p.max_connections_per_worker = 4 << 20;
    let r = assess(f, p);
    assert_eq!(binding(&r), ["io_uring_max_fixed_files"]);
    assert_eq!(r.slots_per_ring, Some(cost::IORING_MAX_FIXED_FILES));
    assert_eq!(
        row(&r, "io_uring_max_fixed_files").fix,
        ["run with --workers 2 or more (each ring holds at most 1,048,576)"]
    );
}

#[test]
fn per_worker_setting_binds() {
    let mut p = plan(1_000_000, 2);
    p.max_connections_per_worker = 65536;
    let r = assess(roomy(), p);
    assert_eq!(binding(&r), ["max_connections_per_worker"]);
    assert_eq!(row(&r, "max_connections_per_worker").allows, Some(131_072));
    assert_eq!(
        row(&r, "max_connections_per_worker").fix[0],
        "--max-connections-per-worker 500000 (config key max_connections_per_worker)"
    );
    // A pure load box has no gateway setting.
    let mut p = plan(1_000_000, 2);
    p.role = Role::Load;
    p.source_addrs = 16;
    p.max_connections_per_worker = 65536;
    let r = assess(roomy(), p);
    assert!(r
        .limits
        .iter()
        .all(|l| l.key != "max_connections_per_worker"));
}

#[test]
fn memory_divides_available_by_the_per_connection_cost() {
    let mut f = roomy();
    f.mem_available_bytes = Some(1 << 30);
    let r = assess(f, plan(1_000_000, 2));
    let per_conn = PerConnection::new(RecvMode::Poll, false).total_bytes;
    let fixed = 2 * cost::per_worker_bytes(4096, 65536, 1 << 20, 4096);
    let mem = row(&r, "memory");
    assert_eq!(mem.allows, Some(((1u64 << 30) - fixed) / per_conn));
    assert_eq!(binding(&r), ["memory"]);
    assert!(mem.fix[0].starts_with("1,000,000 connections need about 4.0 GiB; 1.0 GiB"));
    // Multishot waits cost more and the fix says what poll saves.
    let mut f = roomy();
    f.mem_available_bytes = Some(1 << 30);
    let mut p = plan(1_000_000, 2);
    p.recv_mode = RecvMode::Multishot;
    let r = assess(f, p);
    assert!(row(&r, "memory")
        .fix
        .contains(&"--recv-mode poll saves 608 B per connection".to_string()));
}

#[test]
fn cgroup_limit_binds_before_host_memory() {
    let mut f = roomy();
    f.cgroup_memory = Some(super::facts::CgroupLimit {
        file: "/sys/fs/cgroup/x/memory.max".into(),
        limit_bytes: Some(2 << 30),
        usage_bytes: Some(1 << 30),
    });
    let r = assess(f, plan(1_000_000, 1));
    assert_eq!(binding(&r), ["cgroup_memory"]);
    let fixed = cost::per_worker_bytes(4096, 65536, 1 << 20, 4096);
    assert_eq!(
        row(&r, "cgroup_memory").allows,
        Some(((1u64 << 30) - fixed) / 4245)
    );
}

#[test]
fn conntrack_caps_only_when_it_tracks() {
    let mut f = roomy();
    f.conntrack = Some(Conntrack {
        max: 262_144,
        count: 144,
    });
    let r = assess(f.clone(), plan(1_000_000, 2));
    let ct = row(&r, "net.netfilter.nf_conntrack_max");
    assert_eq!(ct.allows, Some(262_000));
    assert_eq!(ct.status, Status::Binds);
    assert_eq!(
        ct.fix[0],
        "sysctl -w net.netfilter.nf_conntrack_max=1200000"
    );
    assert!(ct.fix[3].contains("tcp dport 4000 notrack"), "{:?}", ct.fix);
    // Loaded but unhooked: a warning, not a cap.
    f.conntrack = Some(Conntrack {
        max: 262_144,
        count: 0,
    });
    let r = assess(f, plan(1_000_000, 2));
    let ct = row(&r, "net.netfilter.nf_conntrack_max");
    assert_eq!((ct.allows, ct.status), (None, Status::Warn));
    assert!(r.reachable);
}

#[test]
fn file_max_counts_both_ends_on_a_shared_box() {
    let mut f = roomy();
    f.file_max = Some(1_001_000);
    let r = assess(f.clone(), plan(1_000_000, 2));
    assert_eq!(row(&r, "fs.file-max").allows, Some(1_000_000));
    assert_eq!(row(&r, "fs.file-max").status, Status::Ok);
    let mut p = plan(1_000_000, 2);
    p.role = Role::Both;
    p.source_addrs = 40;
    let r = assess(f, p);
    assert_eq!(row(&r, "fs.file-max").allows, Some(500_000));
    assert_eq!(
        row(&r, "fs.file-max").fix[0],
        "sysctl -w fs.file-max=2300000"
    );
}

#[test]
fn load_box_needs_source_addresses() {
    let mut f = roomy();
    f.ip_local_port_range = Some([32768, 60999]);
    f.tcp_tw_reuse = Some(2);
    let mut p = plan(1_000_000, 2);
    p.role = Role::Load;
    let r = assess(f.clone(), p.clone());
    let ports = row(&r, "net.ipv4.ip_local_port_range");
    assert_eq!(ports.allows, Some(3_529));
    assert!(
        ports.fix[0].contains("rerun with --source-addrs 284"),
        "{:?}",
        ports.fix
    );
    assert_eq!(
        ports.fix[2],
        "sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\""
    );
    // 2 = loopback only: not enough for a load box on a network.
    assert_eq!(row(&r, "net.ipv4.tcp_tw_reuse").status, Status::Warn);
    p.source_addrs = 284;
    let r = assess(f, p);
    assert_eq!(
        row(&r, "net.ipv4.ip_local_port_range").allows,
        Some(284 * 3_529)
    );
    assert!(r.reachable, "{:?}", binding(&r));
    // The gateway box does not open client ports.
    let r = assess(roomy(), plan(1_000_000, 2));
    assert_eq!(row(&r, "net.ipv4.ip_local_port_range").status, Status::Info);
}

#[test]
fn io_uring_switched_off_binds_at_zero() {
    let mut f = roomy();
    f.io_uring_disabled = Some(2);
    f.io_uring_features = Some(vec![Feature {
        feature: "io_uring with SINGLE_ISSUER | DEFER_TASKRUN",
        since: "6.1",
        missing: Some("io_uring is disabled".into()),
        optional: false,
    }]);
    let r = assess(f, plan(10, 1));
    assert_eq!(
        binding(&r),
        [
            "kernel.io_uring_disabled",
            "io_uring: io_uring with SINGLE_ISSUER | DEFER_TASKRUN"
        ]
    );
    assert_eq!(r.max_connections, Some(0));
    assert_eq!(r.first_to_bind.as_deref(), Some("kernel.io_uring_disabled"));
    assert_eq!(
        row(&r, "kernel.io_uring_disabled").fix[0],
        "sysctl -w kernel.io_uring_disabled=0"
    );
}

#[test]
fn a_missing_optional_feature_is_a_note_not_a_limit() {
    let mut f = roomy();
    f.io_uring_features.as_mut().unwrap().push(Feature {
        feature: "min_wait (IORING_FEAT_MIN_TIMEOUT), for wake_batch_us",
        since: "6.12",
        missing: Some("Upgrade the kernel or set wake_batch_us = 0.".into()),
        optional: true,
    });
    let r = assess(f, plan(10, 1));
    let key = "io_uring: min_wait (IORING_FEAT_MIN_TIMEOUT), for wake_batch_us";
    assert_eq!(row(&r, key).status, Status::Info);
    assert!(binding(&r).is_empty(), "{:?}", binding(&r));
    assert_eq!(
        r.max_connections,
        assess(roomy(), plan(10, 1)).max_connections
    );
}

#[test]
fn old_kernel_binds() {
    let mut f = roomy();
    f.kernel_release = Some("5.15.0-100-generic".into());
    let r = assess(f, plan(10, 1));
    assert_eq!(binding(&r), ["kernel"]);
    assert_eq!(row(&r, "kernel").allows, Some(0));
}

#[test]
fn unreadable_values_warn_and_do_not_bind() {
    let mut f = roomy();
    f.nr_open = None;
    f.somaxconn = None;
    let r = assess(f, plan(1000, 1));
    assert!(r.reachable);
    assert_eq!(row(&r, "fs.nr_open").status, Status::Warn);
    assert_eq!(row(&r, "fs.nr_open").value, "unreadable");
    assert_eq!(row(&r, "net.core.somaxconn").status, Status::Warn);
}

#[test]
fn queues_and_buffers_warn_with_their_fix() {
    let mut f = roomy();
    f.somaxconn = Some(128);
    f.tcp_mem_pages = Some([100, 200, 300]);
    let r = assess(f, plan(1000, 2));
    assert!(r.reachable, "queues never cap the count");
    let q = row(&r, "net.core.somaxconn");
    assert_eq!(q.status, Status::Warn);
    assert_eq!(q.fix[0], "sysctl -w net.core.somaxconn=65535");
    let m = row(&r, "net.ipv4.tcp_mem");
    assert_eq!(m.status, Status::Warn);
    assert_eq!(m.fix[0], "sysctl -w net.ipv4.tcp_mem=\"100 1000 2000\"");
}

#[test]
fn table_names_the_binding_limit() {
    let mut f = roomy();
    f.nofile = Some(Rlimit {
        soft: Some(1000),
        hard: Some(1000),
    });
    let r = assess(f, plan(5000, 1));
    let text = super::render::table(&r);
    assert!(
        text.contains(
            "NOT REACHABLE: RLIMIT_NOFILE soft binds first, at 1,000 connections (target 5,000)."
        ),
        "{text}"
    );
    assert!(text.contains("or run with --workers 5, so that 5 × 1,000 ≥ 5,000"));
    let line = text
        .lines()
        .find(|l| l.starts_with("RLIMIT_NOFILE soft"))
        .unwrap();
    assert!(line.ends_with("1,000  BINDS"), "{line}");
}

/// kernel-tuning/README.md documents every row doctor can print, and every sysctl the shipped
/// files set; the shipped nofile values are ones a ring can use.
#[test]
fn tuning_guide_covers_every_row_and_file() {
    let guide = include_str!("../../kernel-tuning/README.md");
    let mut f = roomy();
    f.conntrack = Some(Conntrack { max: 1, count: 1 });
    f.cgroup_memory = Some(super::facts::CgroupLimit {
        file: "/x".into(),
        limit_bytes: Some(1 << 40),
        usage_bytes: None,
    });
    let mut p = plan(1000, 1);
    p.role = Role::Both;
    let r = assess(f, p);
    for l in &r.limits {
        if l.key.starts_with("io_uring: ") || l.key == "kernel" || l.key == "cores" {
            continue;
        }
        assert!(
            guide.contains(&format!("`{}`", l.key)),
            "README misses row {}",
            l.key
        );
    }
    for file in [
        include_str!("../../kernel-tuning/sysctl.d/90-ringgate.conf"),
        include_str!("../../kernel-tuning/sysctl.d/90-ringgate-load.conf"),
    ] {
        for line in file.lines() {
            // Settings, and settings commented out (`#key = value`); not prose comments.
            let line = line.strip_prefix('#').unwrap_or(line);
            let Some((key, _)) = line.split_once(" = ") else {
                continue;
            };
            if key.contains(' ') {
                continue;
            }
            assert!(
                guide.contains(&format!("`{key}")),
                "README misses sysctl {key}"
            );
        }
    }
    let unit = include_str!("../../kernel-tuning/systemd/ringgate.service");
    let limits = include_str!("../../kernel-tuning/limits.d/90-ringgate.conf");
    let nofile = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("LimitNOFILE in the unit");
    assert_eq!(nofile, cost::IORING_MAX_FIXED_FILES.to_string());
    assert!(unit.contains("\nLimitMEMLOCK=") && unit.contains("\nTasksMax="));
    assert!(limits.contains(&format!("*       hard    nofile  {nofile}")));
    assert!(limits.contains(&format!("root    hard    nofile  {nofile}")));
}
