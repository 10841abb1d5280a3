//! `ringgate load` against ringgate itself: the seed scenario, the chat scenario, the report
//! (rendered in headless Chromium), `--procs`, and Ctrl-C.

mod common;
#[path = "load/helpers.rs"]
mod helpers;

use std::process::Command;
use std::time::Duration;

use common::Gateway;
use helpers::{finish, run, spawn, u};

#[test]
fn seed_2000_users_every_join_matched_and_report_renders() {
    let gw = Gateway::start(&["--workers", "2"]);
    let url = gw.url("/socket/websocket");
    let (r, _dir) = run(&[
        "--url",
        &url,
        "--scenario",
        "seed",
        "--users",
        "2000",
        "--arrival-rate",
        "1000",
        "--duration",
        "4",
        "--workers",
        "2",
    ]);
    r.assert_ok();
    let s = r.summary();
    assert_eq!(u(&s, "arrivals"), 2000, "{s}");
    assert_eq!(u(&s, "connected"), 2000, "{s}");
    assert_eq!(u(&s, "peak_users"), 2000, "{s}");
    assert_eq!(u(&s, "transactions.join.count"), 2000, "{s}");
    assert_eq!(u(&s, "transactions.connect.count"), 2000, "{s}");
    assert_eq!(u(&s, "messages_sent"), 2000, "{s}");
    assert_eq!(u(&s, "messages_received"), 2000, "{s}");
    assert_eq!(u(&s, "errors_total"), 0, "{s}\n{}", r.stderr);
    assert_eq!(u(&s, "finished"), 2000, "every user closed at the end: {s}");
    assert!(
        r.stderr.contains("users 2000"),
        "progress line:\n{}",
        r.stderr
    );

    // The time series: one row per second, the users column reaching 2000.
    let csv = std::fs::read_to_string(r.out.join("timeseries.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(
        rows[0].starts_with("t_s,users,connecting,arrivals,connected"),
        "{}",
        rows[0]
    );
    assert!(
        (5..=8).contains(&(rows.len() - 1)),
        "{} rows",
        rows.len() - 1
    );
    let max_users = rows[1..]
        .iter()
        .map(|r| r.split(',').nth(1).unwrap().parse::<u64>().unwrap())
        .max();
    assert_eq!(max_users, Some(2000));
    let arrivals: u64 = rows[1..]
        .iter()
        .map(|r| r.split(',').nth(3).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(arrivals, 2000);

    check_html(&r.out.join("report.html"), &["connect", "join"]);
}

/// Chart sections the report must have, with the minimum data lines each draws.
const CHARTS: [(&str, u64); 5] = [
    ("chart-users", 1),
    ("chart-arrivals", 1),
    ("chart-latency", 2),
    ("chart-messages", 1),
    ("chart-resources", 1),
];

/// Renders the report in headless Chromium and checks every chart has drawn data; without
/// Chromium (a dev box) falls back to checking the SVG markup, and says so. CI installs it.
fn check_html(path: &std::path::Path, histograms: &[&str]) {
    let html = std::fs::read_to_string(path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script"), "self-contained, no scripts");
    assert!(!html.contains("src=\"http"), "no external resources");
    for (id, _) in CHARTS {
        assert!(html.contains(&format!("id=\"{id}\"")), "missing {id}");
    }
    for name in histograms {
        assert!(
            html.contains(&format!("Latency of {name}")),
            "no histogram of {name}"
        );
    }
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(chromium) = chromium else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must render the report: install chromium (scripts/test.sh stage_deps)"
        );
        eprintln!("chromium not installed: checking the SVG markup instead of rendering it");
        for (id, min) in CHARTS {
            let sec = &html[html.find(&format!("id=\"{id}\"")).unwrap()..];
            let sec = &sec[..sec.find("</section>").unwrap()];
            let lines = sec
                .split("<polyline")
                .skip(1)
                .filter(|p| !p.contains("stroke=\"#000000\"") && p.split(',').count() > 3)
                .count() as u64;
            assert!(lines >= min, "{id}: {lines} data lines");
        }
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("check.html");
    let probe = include_str!("load/render_check.js");
    std::fs::write(
        &page,
        html.replace("</body>", &format!("<script>{probe}</script></body>")),
    )
    .unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.rfind("<pre id=\"render-check\">").unwrap_or_else(|| {
        panic!(
            "no render result; chromium stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    }) + "<pre id=\"render-check\">".len();
    let json = &dom[start..start + dom[start..].find("</pre>").unwrap()];
    let v: serde_json::Value = serde_json::from_str(&json.replace("&quot;", "\""))
        .unwrap_or_else(|e| panic!("{e}: {json}"));
    for (id, min) in CHARTS {
        assert!(
            u(&v, &format!("{id}.lines")) >= min,
            "{id} drew too few lines: {v}"
        );
        assert!(
            u(&v, &format!("{id}.width")) > 300,
            "{id} not laid out: {v}"
        );
    }
    assert!(
        u(&v, "chart-users.tall") >= 1,
        "the users line does not rise: {v}"
    );
    assert!(
        u(&v, "chart-histogram.svgs") as usize >= histograms.len(),
        "{v}"
    );
    assert!(
        u(&v, "chart-histogram.bars") >= histograms.len() as u64,
        "{v}"
    );
}

#[test]
fn chat_every_post_reaches_every_member_of_its_room() {
    let gw = Gateway::start(&["--workers", "2"]);
    let url = gw.url("/socket/websocket");
    let (r, _dir) = run(&[
        "--url",
        &url,
        "--scenario",
        "chat",
        "--users",
        "200",
        "--arrival-rate",
        "400",
        "--rooms",
        "5",
        "--post-interval-ms",
        "500",
        "--duration",
        "6",
    ]);
    r.assert_ok();
    let s = r.summary();
    assert_eq!(u(&s, "errors_total"), 0, "{s}\n{}", r.stderr);
    assert_eq!(u(&s, "transactions.join.count"), 200);
    let posts = u(&s, "transactions.post.count");
    // One join per user, then posts; everyone stays until posting is over.
    assert_eq!(u(&s, "messages_sent"), 200 + posts);
    assert!(posts >= 200, "at least one round of posts: {posts}");
    // Every post reaches its room's 40 members (the poster included), each with a timestamp.
    assert_eq!(u(&s, "delivery.count"), posts * 40, "{s}");
    // Received: join replies + post replies + deliveries.
    assert_eq!(u(&s, "messages_received"), 200 + posts + posts * 40);
    assert!(s["delivery"]["p99_ms"].as_f64().unwrap() > 0.0);
    check_html(&r.out.join("report.html"), &["connect", "join", "post"]);
}

/// A session that joins one room, meets every other user at a rendezvous, posts once and idles.
/// Users arrive over 2 s: without the rendezvous the first posts would leave before the last
/// users joined, and they would miss them.
fn rendezvous_scenario(users: u64, rendezvous: &str, sessions: &str) -> String {
    format!(
        r#"duration_s = 10
users = {users}
[[phases]]
duration_s = 2
arrival_rate = {rate}
[[sessions]]
{sessions}
steps = [
  {{ connect = {{ path = "/socket/websocket?vsn=2.0.0" }} }},
  {{ send = {{ text = '["{{ref}}","{{ref}}","rooms:rv","phx_join",{{}}]' }} }},
  {{ expect = {{ contains = '"phx_reply",{{"status":"ok"', name = "join" }} }},
  {{ rendezvous = {rendezvous} }},
  {{ send = {{ text = '["1","{{ref}}","rooms:rv","new_msg",{{"ts_ns":{{ts_ns}}}}]' }} }},
  {{ expect = {{ contains = '"{{ref}}","rooms:rv","phx_reply",{{"status":"ok"', name = "post" }} }},
  {{ think = {{ until = "end" }} }},
]
"#,
        rate = users / 2,
    )
}

/// Runs scenario `text` with `args` against a fresh gateway (`--workers 2`, an echo endpoint at
/// `/echo`); the run must exit 0.
fn run_scenario(text: &str, args: &[&str]) -> (helpers::Run, serde_json::Value) {
    run_scenario_on(&[], text, args)
}

/// [`run_scenario`] with more gateway flags.
fn run_scenario_on(
    gw_args: &[&str],
    text: &str,
    args: &[&str],
) -> (helpers::Run, serde_json::Value) {
    let mut all_gw = vec!["--workers", "2", "--echo-path", "/echo"];
    all_gw.extend_from_slice(gw_args);
    let gw = Gateway::start(&all_gw);
    let url = gw.url("/socket/websocket");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenario.toml");
    std::fs::write(&path, text).unwrap();
    let mut all = vec!["--url", &url, "--scenario", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let (r, _out) = run(&all);
    r.assert_ok();
    let s = r.summary();
    (r, s)
}

#[test]
fn rendezvous_across_procs_holds_every_post_until_the_last_user_joined() {
    const USERS: u64 = 40;
    let text = rendezvous_scenario(USERS, "{ timeout_ms = 30000 }", "");
    let (r, s) = run_scenario(&text, &["--procs", "2", "--workers", "1"]);
    assert_eq!(u(&s, "errors_total"), 0, "{s}\n{}", r.stderr);
    assert_eq!(u(&s, "rendezvous_users"), USERS, "{s}");
    assert_eq!(u(&s, "rendezvous_reached"), USERS, "{s}");
    assert_eq!(u(&s, "transactions.post.count"), USERS, "{s}");
    // Every post reached every user: all had joined before the first one left.
    assert_eq!(u(&s, "delivery.count"), USERS * USERS, "{s}");
    assert_eq!(u(&s, "messages_received"), 2 * USERS + USERS * USERS, "{s}");
}

#[test]
fn rendezvous_that_never_completes_times_out_and_the_session_goes_on() {
    const USERS: u64 = 10;
    // Half the users run a session without the rendezvous, so the ten it waits for never come.
    let mut text = rendezvous_scenario(
        USERS,
        "{ users = 10, timeout_ms = 500 }",
        "probability = 50",
    );
    text.push_str("[[sessions]]\nprobability = 50\nsteps = [ { connect = { path = \"/socket/websocket?vsn=2.0.0\" } }, { think = { until = \"end\" } } ]\n");
    let (r, s) = run_scenario(&text, &[]);
    let reached = u(&s, "rendezvous_reached");
    assert!((1..USERS).contains(&reached), "{s}");
    assert_eq!(u(&s, "errors.rendezvous_timeout"), reached, "{s}");
    assert_eq!(u(&s, "errors_total"), reached, "{s}\n{}", r.stderr);
    // Each went on after its timeout and posted.
    assert_eq!(u(&s, "transactions.post.count"), reached, "{s}");
    assert!(
        r.stderr.contains("rendezvous was not complete"),
        "{}",
        r.stderr
    );
}

#[test]
fn users_that_fail_before_the_rendezvous_do_not_hold_it_to_the_timeout() {
    const USERS: u64 = 10;
    // Users with an even id ask for a path the gateway does not serve (404): their sessions end
    // before the rendezvous, so the others meet once they have arrived instead of waiting out
    // the 30 s timeout (past the run's end).
    let text = rendezvous_scenario(USERS, "{ timeout_ms = 30000 }", "").replace(
        "/socket/websocket?vsn=2.0.0",
        "/socket{user_id%2}/websocket?vsn=2.0.0",
    );
    let (r, s) = run_scenario_on(&["--phoenix-path", "/socket1/websocket"], &text, &[]);
    let half = USERS / 2;
    assert_eq!(u(&s, "errors.upgrade"), half, "{s}\n{}", r.stderr);
    assert_eq!(u(&s, "errors_total"), half, "{s}");
    assert_eq!(u(&s, "rendezvous_missed"), half, "{s}");
    assert_eq!(u(&s, "rendezvous_reached"), half, "{s}");
    assert_eq!(u(&s, "transactions.post.count"), half, "{s}");
    // Every post reached every user that met: all had joined before the first one left.
    assert_eq!(u(&s, "delivery.count"), half * half, "{s}");
}

/// A session yields to the other users after 256 steps in one go. Here the yield falls exactly in
/// front of an `expect`: the expect must still wait for its frame, not count the yield's
/// "continue" deadline as its own timeout.
#[test]
fn a_yield_in_front_of_an_expect_is_not_its_timeout() {
    // Steps run in one go after the upgrade (which ran `connect`): send, two thinks, loop begin,
    // then 126 × (think, loop end) = 256, so the budget ends with the expect next.
    let text = r#"duration_s = 3
users = 1
[[phases]]
duration_s = 1
arrival_rate = 1
[[sessions]]
steps = [
  { connect = { path = "/echo" } },
  { send = { text = "ping {user_id}" } },
  { think = { ms = 0 } },
  { think = { ms = 0 } },
  { loop = { count = 126, steps = [ { think = { ms = 0 } } ] } },
  { expect = { contains = "ping", name = "echo" } },
  { think = { until = "end" } },
]
"#;
    let (r, s) = run_scenario(text, &[]);
    assert_eq!(u(&s, "errors_total"), 0, "{s}\n{}", r.stderr);
    assert_eq!(u(&s, "transactions.echo.count"), 1, "{s}");
}

#[test]
fn procs_merge_into_one_report() {
    let gw = Gateway::start(&["--workers", "2"]);
    let url = gw.url("/socket/websocket");
    let (r, _dir) = run(&[
        "--url",
        &url,
        "--scenario",
        "seed",
        "--users",
        "1000",
        "--arrival-rate",
        "1000",
        "--duration",
        "3",
        "--procs",
        "2",
        "--workers",
        "1",
    ]);
    r.assert_ok();
    let s = r.summary();
    assert_eq!(u(&s, "procs"), 2);
    assert_eq!(u(&s, "connected"), 1000, "{s}");
    assert_eq!(u(&s, "peak_users"), 1000, "{s}");
    assert_eq!(u(&s, "transactions.join.count"), 1000, "{s}");
    assert_eq!(u(&s, "errors_total"), 0, "{s}");
    assert!(u(&s, "peak_rss_bytes") > 0);
}

#[test]
fn sigint_closes_users_and_still_writes_the_report() {
    let gw = Gateway::start(&["--workers", "2"]);
    let url = gw.url("/socket/websocket");
    let dir = tempfile::tempdir().unwrap();
    let child = spawn(
        &[
            "--url",
            &url,
            "--scenario",
            "phoenix-idle",
            "--users",
            "300",
            "--arrival-rate",
            "600",
            "--duration",
            "40",
        ],
        dir.path(),
    );
    let pid = child.id();
    // Interrupt once every user has joined (the gateway's count, bounded), not after a fixed
    // sleep a slow box may outlast.
    common::wait_for("300 users joined", Duration::from_secs(20), || {
        common::admin_stats(gw.admin)["summary"]["memberships"] == 300
    });
    // SAFETY: kill on the PID of the child this test started and has not reaped.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
    let r = finish(child, dir.path(), Duration::from_secs(15));
    r.assert_ok();
    let s = r.summary();
    assert_eq!(s["interrupted"], true);
    // Well short of the 40 s asked for: the interrupt ended the run.
    assert!(u(&s, "elapsed_s") < 35, "{s}");
    assert_eq!(u(&s, "connected"), 300, "{s}");
    assert_eq!(u(&s, "finished"), 300, "{s}");
    assert_eq!(u(&s, "errors_total"), 0, "{s}");
    assert!(
        r.stderr.contains("closing users and writing the report"),
        "{}",
        r.stderr
    );
}

/// Established client sockets towards `port` on 127.0.0.1, by local address (`/proc/net/tcp`:
/// `ADDR:PORT` in hex, the address as the kernel's native-endian u32).
fn client_sockets_by_source(port: u16) -> std::collections::BTreeMap<String, u64> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let mut by = std::collections::BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, state) = (f[1], f[2], f[3]);
        let (raddr, rport) = remote.split_once(':').unwrap();
        if state != "01" || u16::from_str_radix(rport, 16).unwrap() != port || raddr != "0100007F" {
            continue;
        }
        let laddr = u32::from_str_radix(local.split_once(':').unwrap().0, 16).unwrap();
        let ip = std::net::Ipv4Addr::from(laddr.to_ne_bytes());
        *by.entry(ip.to_string()).or_insert(0) += 1;
    }
    by
}

/// No `--source` against a loopback gateway: `ringgate load` binds enough addresses of its own
/// pool, each process its own. The per-address budget is shrunk to 5 with the test knob, so 40
/// users from 2 processes need 8 addresses (4 each) at 5 connections each; the kernel's socket
/// table shows exactly that while the users are held.
#[test]
fn procs_bind_automatically_chosen_sources_to_a_loopback_gateway() {
    let gw = Gateway::start(&["--workers", "2"]);
    let url = gw.url("/socket/websocket");
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .args(["load", "--url", &url, "--scenario", "phoenix-idle"])
        .args(["--users", "40", "--arrival-rate", "400", "--duration", "5"])
        .args(["--procs", "2", "--workers", "1", "--out"])
        .arg(dir.path())
        .env("RINGGATE_LOAD_PORTS_PER_SOURCE", "5")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let mut by = client_sockets_by_source(gw.addr.port());
    while by.values().sum::<u64>() < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "40 users not all connected within 4 s of a 5 s run: {by:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        by = client_sockets_by_source(gw.addr.port());
    }
    let want: std::collections::BTreeMap<String, u64> =
        (1..=8).map(|i| (format!("127.0.1.{i}"), 5)).collect();
    assert_eq!(by, want);
    let r = finish(child, dir.path(), Duration::from_secs(40));
    r.assert_ok();
    assert!(
        r.stderr.contains(
            "ringgate load: 40 users need 8 source addresses (5 per address, set by \
             RINGGATE_LOAD_PORTS_PER_SOURCE): binding 127.0.1.1-127.0.1.8"
        ),
        "{}",
        r.stderr
    );
    let s = r.summary();
    assert_eq!(u(&s, "connected"), 40, "{s}");
    assert_eq!(u(&s, "errors_total"), 0, "{s}\n{}", r.stderr);
    assert_eq!(s["sources"]["mode"], "auto", "{s}");
    assert_eq!(s["sources"]["ranges"], "127.0.1.1-127.0.1.8", "{s}");
    assert_eq!(u(&s, "sources.addresses"), 8, "{s}");
    assert_eq!(u(&s, "sources.most_users_per_address"), 5, "{s}");
}
