//! What an operator sees, driven as they would: a scripted run of real WebSocket clients against
//! `ringgate serve`, with `/metrics` scraped between its steps and checked by the real
//! `promtool check metrics` (Debian `prometheus`, installed by scripts/test.sh), the figures
//! moving exactly as the run says (connections up and down, deliveries = members × broadcasts);
//! the pages and assets of the admin port; the API key; the log formats.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{http_request, Gateway, RawClient};

const MEMBERS: usize = 40;
const ADMIN_BROADCASTS: u64 = 5;
const TOPIC: &str = "rooms:metrics";

fn get(addr: SocketAddr, path: &str, headers: &str) -> (String, String) {
    let resp = http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n"),
    )
    .unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

fn post(addr: SocketAddr, path: &str, body: &str) -> String {
    http_request(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap()
}

/// Scrapes `/metrics` and has `promtool check metrics` lint it; returns the text.
fn scrape(gw: &Gateway) -> String {
    let (head, text) = get(gw.admin, "/metrics", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; scripts/test.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- scrape ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Sum of the samples of `name` whose labels contain every `want` (`name{...} value` lines).
fn sum(text: &str, name: &str, want: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            (n == name && want.iter().all(|w| labels.contains(w)))
                .then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

fn per_worker(text: &str, name: &str, worker: usize) -> f64 {
    sum(text, name, &[&format!("worker=\"{worker}\"")])
}

fn join(c: &mut RawClient, topic: &str) {
    c.send_frame(
        true,
        1,
        format!(r#"["1","1","{topic}","phx_join",{{}}]"#).as_bytes(),
    );
    let (_, _, reply) = c.read_frame().expect("join reply");
    let reply = String::from_utf8(reply).unwrap();
    assert!(reply.contains(r#""status":"ok""#), "{reply}");
}

/// Reads frames until `n` broadcasts of `event` have arrived.
fn expect_broadcasts(c: &mut RawClient, event: &str, n: usize) {
    let mut seen = 0;
    while seen < n {
        let (_, _, f) = c.read_frame().expect("a broadcast");
        let f = String::from_utf8(f).unwrap();
        if f.starts_with(r#"[null,null,"#) && f.contains(&format!(r#""{event}""#)) {
            seen += 1;
        }
    }
}

fn wait_until(what: &str, check: impl FnMut() -> bool) {
    common::wait_for(what, Duration::from_secs(15), check);
}

#[test]
fn metrics_follow_a_scripted_run_and_pass_promtool() {
    let gw = Gateway::start(&["--workers", "2", "--timer-tick-ms", "100"]);
    // The readiness probe's connection (GET /healthz on the public port) is closed by the server
    // once answered: wait until it is counted, so every later difference is this run's alone.
    wait_until("the readiness probe counted as closed", || {
        let (_, t) = get(gw.admin, "/metrics", "");
        let accepted = sum(&t, "ringgate_accepted_total", &[]);
        accepted > 0.0 && sum(&t, "ringgate_closed_total", &[]) == accepted
    });
    let idle = scrape(&gw);
    assert_eq!(sum(&idle, "ringgate_connections", &[]), 0.0);
    assert_eq!(sum(&idle, "ringgate_workers", &[]), 2.0);
    assert_eq!(sum(&idle, "ringgate_build_info", &[]), 1.0);

    // Up: MEMBERS clients join one topic.
    let mut clients: Vec<RawClient> = (0..MEMBERS)
        .map(|_| RawClient::connect(gw.addr, "/socket/websocket?vsn=2.0.0"))
        .collect();
    for c in &mut clients {
        join(c, TOPIC);
    }
    let up = scrape(&gw);
    let m = MEMBERS as f64;
    assert_eq!(sum(&up, "ringgate_connections", &[]), m, "{up}");
    assert_eq!(sum(&up, "ringgate_connections_open", &[]), m);
    let accepted_before = sum(&idle, "ringgate_accepted_total", &[]);
    let closed_before = sum(&idle, "ringgate_closed_total", &[]);
    assert_eq!(
        sum(&up, "ringgate_accepted_total", &[]) - accepted_before,
        m
    );
    assert_eq!(sum(&up, "ringgate_joins_total", &[]), m);
    assert_eq!(sum(&up, "ringgate_memberships", &[]), m);
    assert_eq!(sum(&up, "ringgate_topics", &[]), 1.0);

    // Broadcasts: ADMIN_BROADCASTS through the admin API (one single, the rest as an array), and
    // one client push (which the default `rooms:*` route broadcasts to every member, sender too).
    let one = format!(r#"{{"topic":"{TOPIC}","event":"news","payload":{{"n":0}}}}"#);
    assert!(post(gw.admin, "/api/broadcast", &one).starts_with("HTTP/1.1 202"));
    let rest: Vec<String> = (1..ADMIN_BROADCASTS)
        .map(|n| format!(r#"{{"topic":"{TOPIC}","event":"news","payload":{{"n":{n}}}}}"#))
        .collect();
    let resp = post(gw.admin, "/api/broadcast", &format!("[{}]", rest.join(",")));
    assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    for c in &mut clients {
        expect_broadcasts(c, "news", ADMIN_BROADCASTS as usize);
    }
    clients[0].send_frame(
        true,
        1,
        format!(r#"["1","2","{TOPIC}","new_msg",{{"body":"hi"}}]"#).as_bytes(),
    );
    for c in &mut clients {
        expect_broadcasts(c, "new_msg", 1);
    }
    let broadcasts = ADMIN_BROADCASTS + 1;
    let after = scrape(&gw);
    assert_eq!(
        sum(&after, "ringgate_deliveries_total", &[]),
        m * broadcasts as f64,
        "deliveries = members × broadcasts"
    );
    assert_eq!(
        sum(
            &after,
            "ringgate_broadcasts_total",
            &["source=\"admin_api\""]
        ),
        ADMIN_BROADCASTS as f64
    );
    assert_eq!(
        sum(&after, "ringgate_broadcasts_total", &["source=\"client\""]),
        1.0
    );
    assert_eq!(sum(&after, "ringgate_deliveries_dropped_total", &[]), 0.0);
    // One latency observation per broadcast and worker holding members.
    let holding = (0..2)
        .filter(|&w| per_worker(&after, "ringgate_memberships", w) > 0.0)
        .count() as f64;
    assert_eq!(
        sum(&after, "ringgate_delivery_latency_seconds_count", &[]),
        holding * broadcasts as f64
    );
    assert_eq!(
        sum(
            &after,
            "ringgate_delivery_latency_seconds_bucket",
            &["le=\"+Inf\""]
        ),
        holding * broadcasts as f64
    );

    // The JSON snapshot says the same.
    let (head, body) = get(gw.admin, "/api/stats", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    let s = &stats["summary"];
    assert_eq!(s["connections"], MEMBERS as u64);
    assert_eq!(s["memberships"], MEMBERS as u64);
    assert_eq!(s["broadcasts"], broadcasts);
    assert_eq!(s["deliveries"], MEMBERS as u64 * broadcasts);
    assert_eq!(stats["admin"]["broadcasts"], ADMIN_BROADCASTS);
    assert_eq!(
        s["delivery_latency"]["count"].as_u64().unwrap() as f64,
        holding * broadcasts as f64
    );
    assert!(s["user_bytes_per_connection"].as_u64().unwrap() >= 64);

    // Down: every client goes; the gauges return to zero, the counters keep the run.
    drop(clients);
    wait_until("connections back to 0", || {
        let (_, t) = get(gw.admin, "/metrics", "");
        sum(&t, "ringgate_connections", &[]) == 0.0
    });
    let down = scrape(&gw);
    assert_eq!(sum(&down, "ringgate_closed_total", &[]) - closed_before, m);
    assert_eq!(sum(&down, "ringgate_leaves_total", &[]), m);
    assert_eq!(sum(&down, "ringgate_memberships", &[]), 0.0);
    assert_eq!(sum(&down, "ringgate_topics", &[]), 0.0);
    assert_eq!(
        sum(&down, "ringgate_deliveries_total", &[]),
        m * broadcasts as f64
    );
}

#[test]
fn pages_and_assets_are_served_from_the_binary() {
    let gw = Gateway::start(&["--workers", "1"]);
    let (head, body) = get(gw.admin, "/", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'self'"));
    assert!(body.contains("<title>ringgate dashboard</title>"));
    assert!(body.contains(r#"src="/assets/uPlot.iife.min.js""#));
    let (head, body) = get(gw.admin, "/chat", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains(&format!(
        r#"<meta name="ringgate-port" content="{}">"#,
        gw.addr.port()
    )));
    assert!(body.contains(r#"<meta name="ringgate-socket-path" content="/socket">"#));
    for (name, starts) in [
        (
            "uPlot.iife.min.js",
            "/*! https://github.com/leeoniya/uPlot (v1.6.32) */",
        ),
        ("phoenix.min.js", "var Phoenix="),
        ("dashboard.js", "// ringgate live dashboard"),
        ("chat.js", "// The seed's chat app"),
    ] {
        let (head, body) = get(gw.admin, &format!("/assets/{name}"), "");
        assert!(head.starts_with("HTTP/1.1 200"), "{name}: {head}");
        assert!(head.contains("content-type: text/javascript"), "{head}");
        assert!(body.starts_with(starts), "{name}");
    }
    let (head, _) = get(gw.admin, "/assets/nope.js", "");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[test]
fn the_api_key_guards_the_data_not_the_pages_or_the_scrape() {
    let gw = Gateway::start(&["--workers", "1", "--api-key", "s3cret"]);
    let (head, _) = get(gw.admin, "/api/stats", "");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = get(gw.admin, "/api/stats", "Authorization: Bearer wrong\r\n");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, body) = get(gw.admin, "/api/stats", "Authorization: Bearer s3cret\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains(r#""summary""#));
    // Unauthenticated broadcasts are refused and not counted.
    let resp = post(
        gw.admin,
        "/api/broadcast",
        r#"{"topic":"rooms:x","event":"e","payload":{}}"#,
    );
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    for path in ["/", "/chat", "/assets/dashboard.js"] {
        let (head, body) = get(gw.admin, path, "");
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        assert!(!body.contains("s3cret"), "{path} leaks the key");
    }
    let text = scrape(&gw);
    assert_eq!(
        sum(
            &text,
            "ringgate_broadcasts_total",
            &["source=\"admin_api\""]
        ),
        0.0
    );
}

/// Starts `serve` with `args`, its stderr piped, until "ringgate listening" is logged; returns
/// what it logged.
fn logs_of(args: &[&str]) -> String {
    let port = common::free_port();
    let admin = common::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
            "--workers",
            "1",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_until("the admin port", || {
        http_request(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    // SIGTERM: a drain with nothing to drain, then exit; stderr ends.
    // SAFETY: kill(2) on the PID of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn logs_are_plain_on_a_pipe_and_json_on_request() {
    let text = logs_of(&[]);
    assert!(text.contains("ringgate listening"), "{text}");
    assert!(text.contains("worker exited"), "{text}");
    assert!(!text.contains('\x1b'), "ANSI escapes on a pipe: {text:?}");
    let json = logs_of(&["--log-format", "json"]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let start = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .unwrap()
                .starts_with("ringgate listening")
        })
        .expect("a start line");
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["workers"], 1);
    assert!(lines.iter().any(|l| l["message"] == "draining"), "{json}");
}

/// `ringgate_*` names in `text` (what a PromQL expression or a doc mentions).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("ringgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn docs_dashboards_and_alerts_name_only_real_metrics() {
    let gw = Gateway::start(&["--workers", "1"]);
    let text = scrape(&gw);
    let families: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_string(), kind.to_string())
        })
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    for (name, _) in &families {
        assert!(
            docs.contains(&format!("`{name}`")),
            "docs/operations.md does not list {name}"
        );
    }
    // Every series a dashboard panel or an alert queries exists (histograms by their parts).
    let exists = |n: &str| {
        families.iter().any(|(f, kind)| {
            n == f
                || (kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| n.strip_suffix(s) == Some(f)))
        })
    };
    let grafana: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/ringgate.json")).unwrap(),
    )
    .expect("deploy/grafana/ringgate.json is JSON");
    let mut exprs = 0;
    for panel in grafana["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            exprs += 1;
            for n in metric_names(expr) {
                assert!(
                    exists(&n),
                    "grafana panel {:?} queries unknown {n}",
                    panel["title"]
                );
            }
        }
    }
    assert!(exprs >= 20, "{exprs}");
    let alerts = std::fs::read_to_string(root.join("deploy/ringgate-alerts.yml")).unwrap();
    for n in metric_names(&alerts) {
        assert!(exists(&n), "an alert queries unknown {n}");
    }
    // promtool checks the scrape config and, through it, the rule file.
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(root.join("deploy/prometheus.yml"))
        .output()
        .expect("promtool");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 12 rules found"));
}
