//! `ringgate doctor` as a user runs it: its JSON agrees with limits this test reads by other means
//! (getrlimit, the /proc/sys files, sysconf), a lowered RLIMIT_NOFILE is named as the binding limit
//! with exit status 1, and a target the box can hold exits 0.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use serde_json::Value;

fn doctor(args: &[&str], nofile: Option<u64>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringgate"));
    cmd.arg("doctor").args(args);
    if let Some(limit) = nofile {
        // SAFETY: runs in the forked child before exec; setrlimit is async-signal-safe and
        // touches only the stack-local struct it is given.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.output().expect("run ringgate doctor")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn row<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no row {key}"))
}

fn sys(path: &str) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .unwrap_or_else(|e| panic!("/proc/sys/{path}: {e}"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

fn nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a valid, owned struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    (lim.rlim_cur, lim.rlim_max)
}

#[test]
fn json_agrees_with_limits_read_independently() {
    let out = doctor(
        &["--target-connections", "100", "--workers", "3", "--json"],
        None,
    );
    let r = json(&out);
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert_eq!(r["reachable"], true);
    let f = &r["facts"];
    assert_eq!(f["unreadable"], Value::Array(vec![]), "{f:#}");

    let (soft, hard) = nofile();
    assert_eq!(f["nofile"]["soft"], soft);
    assert_eq!(f["nofile"]["hard"], hard);
    assert_eq!(row(&r, "nofile_soft")["allows"], 3 * soft);
    assert_eq!(row(&r, "nofile_hard")["allows"], 3 * hard);

    let nr_open = sys("fs/nr_open")[0];
    assert_eq!(f["nr_open"], nr_open);
    assert_eq!(row(&r, "fs.nr_open")["allows"], 3 * nr_open);
    assert_eq!(f["file_max"], sys("fs/file-max")[0]);
    assert_eq!(f["somaxconn"], sys("net/core/somaxconn")[0]);
    assert_eq!(
        f["tcp_max_syn_backlog"],
        sys("net/ipv4/tcp_max_syn_backlog")[0]
    );
    assert_eq!(
        f["ip_local_port_range"],
        serde_json::json!(sys("net/ipv4/ip_local_port_range"))
    );
    assert_eq!(
        f["tcp_mem_pages"],
        serde_json::json!(sys("net/ipv4/tcp_mem"))
    );
    assert_eq!(
        f["tcp_rmem_bytes"],
        serde_json::json!(sys("net/ipv4/tcp_rmem"))
    );
    assert_eq!(
        f["tcp_wmem_bytes"],
        serde_json::json!(sys("net/ipv4/tcp_wmem"))
    );
    match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        Ok(v) => assert_eq!(f["io_uring_disabled"], v.trim().parse::<u64>().unwrap()),
        Err(_) => assert_eq!(f["io_uring_disabled"], Value::Null),
    }
    if std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists() {
        assert_eq!(
            f["conntrack"]["max"],
            sys("net/netfilter/nf_conntrack_max")[0]
        );
    } else {
        assert_eq!(f["conntrack"], Value::Null);
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(f["kernel_release"], release.trim());

    // SAFETY: sysconf has no memory preconditions.
    let (cpus, pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_NPROCESSORS_ONLN),
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    assert_eq!(f["cpus_online"], cpus);
    assert_eq!(f["page_bytes"], page);
    // sysconf's physical pages and MemTotal are the same kernel figure (totalram_pages).
    assert_eq!(f["mem_total_bytes"], pages as u64 * page as u64);

    // The memory row divides what is available by the per-connection cost.
    let available = f["mem_available_bytes"].as_u64().unwrap();
    let per_conn = r["per_connection"]["total_bytes"].as_u64().unwrap();
    let per_worker = r["per_worker_bytes"].as_u64().unwrap();
    assert_eq!(
        row(&r, "memory")["allows"],
        (available - 3 * per_worker) / per_conn
    );
    // Every io_uring feature the gateway needs is present on the project's machines.
    let features = f["io_uring_features"].as_array().unwrap();
    assert!(features.len() > 1);
    for feature in features {
        assert_eq!(feature["missing"], Value::Null, "{feature}");
    }
}

#[test]
fn low_nofile_is_named_as_binding() {
    let out = doctor(
        &["--target-connections", "5000", "--workers", "1", "--json"],
        Some(1000),
    );
    let r = json(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["reachable"], false);
    assert_eq!(r["first_to_bind"], "nofile_soft");
    assert_eq!(r["max_connections"], 1000);
    assert_eq!(r["facts"]["nofile"]["soft"], 1000);
    let soft = row(&r, "nofile_soft");
    assert_eq!(soft["status"], "BINDS");
    assert_eq!(soft["allows"], 1000);
    let fixes: Vec<&str> = soft["fix"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        fixes[0],
        "ulimit -n cannot go past the hard limit (1,000): lift RLIMIT_NOFILE hard first"
    );
    assert!(
        fixes[1].starts_with("or run with --workers 5, so that 5 × 1,000 ≥ 5,000"),
        "{fixes:?}"
    );
    assert_eq!(row(&r, "nofile_hard")["status"], "BINDS");
    assert!(row(&r, "nofile_hard")["fix"]
        .as_array()
        .unwrap()
        .contains(&Value::from(
            "systemd: LimitNOFILE=5000 under [Service] (kernel-tuning/systemd/ringgate.service)"
        )));
}

#[test]
fn low_nofile_table_says_so() {
    let out = doctor(
        &["--target-connections", "5000", "--workers", "1"],
        Some(1000),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "NOT REACHABLE: RLIMIT_NOFILE soft binds first, at 1,000 connections (target 5,000)."
        ),
        "{text}"
    );
}

#[test]
fn low_nofile_under_prlimit() {
    let Ok(probe) = Command::new("prlimit").arg("--version").output() else {
        eprintln!("skipped: prlimit(1) is not installed (the pre_exec tests cover the same case)");
        return;
    };
    assert!(probe.status.success());
    let out = Command::new("prlimit")
        .arg("--nofile=1000:1000")
        .arg(env!("CARGO_BIN_EXE_ringgate"))
        .args([
            "doctor",
            "--target-connections",
            "5000",
            "--workers",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    let r = json(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["first_to_bind"], "nofile_soft");
}

#[test]
fn the_suggested_workers_reach_the_target() {
    // The fix printed above: five rings of 1000 slots hold 5000.
    let out = doctor(
        &["--target-connections", "5000", "--workers", "5", "--json"],
        Some(1000),
    );
    let r = json(&out);
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert_eq!(row(&r, "nofile_soft")["allows"], 5000);
    assert_eq!(r["slots_per_ring"], 1000);
}

#[test]
fn small_per_worker_setting_binds() {
    let out = doctor(
        &[
            "--target-connections",
            "500",
            "--workers",
            "2",
            "--max-connections-per-worker",
            "100",
            "--json",
        ],
        None,
    );
    let r = json(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["first_to_bind"], "max_connections_per_worker");
    assert_eq!(r["max_connections"], 200);
}
