//! `wake_batch_us`: a worker going to sleep lets completions gather for the window before it
//! wakes. Driven as a client sees it: messages spaced wider than a wake-up, each echoed, in order
//! and none lost; the worker's own count of waits (`ringgate_waits_total` on `/metrics`) shows
//! whether it woke once per message or once per window.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{http_request, Gateway, RawClient};

const MESSAGES: u64 = 100;
/// The pause between two messages: far longer than a wake-up (µs), far shorter than the window.
const SPACING: Duration = Duration::from_millis(1);
const WINDOW_US: &str = "50000";

/// The one worker's `ringgate_waits_total`.
fn waits(admin: SocketAddr) -> u64 {
    let resp = http_request(
        admin,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .expect("GET /metrics");
    resp.lines()
        .find(|l| l.starts_with("ringgate_waits_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("ringgate_waits_total in /metrics")
}

/// Sends `MESSAGES` text messages `SPACING` apart, then reads every echo, in order. Returns how
/// many times the worker waited meanwhile.
fn spaced_echoes(args: &[&str]) -> u64 {
    let gw = Gateway::start(&[&["--workers", "1", "--echo-path", "/echo"], args].concat());
    let mut client = RawClient::connect(gw.addr, "/echo");
    // The connect's own completions are handled: the worker is asleep with nothing due.
    std::thread::sleep(Duration::from_millis(200));
    let before = waits(gw.admin);
    for i in 0..MESSAGES {
        client.send_frame(true, 1, format!("m{i}").as_bytes());
        std::thread::sleep(SPACING);
    }
    for i in 0..MESSAGES {
        let (fin, opcode, payload) = client.read_frame().expect("an echo");
        assert!(fin && opcode == 1, "echo {i}: a whole text frame");
        assert_eq!(payload, format!("m{i}").as_bytes(), "echo {i} in order");
    }
    waits(gw.admin) - before
}

#[test]
fn a_batched_worker_wakes_once_per_window_not_once_per_message() {
    if ringgate::ring::probe::check_min_wait().is_err() {
        eprintln!("skipped: this kernel has no io_uring min_wait (6.12+)");
        return;
    }
    let unbatched = spaced_echoes(&[]);
    let batched = spaced_echoes(&["--wake-batch-us", WINDOW_US]);
    eprintln!("waits over {MESSAGES} spaced messages: {unbatched} unbatched, {batched} batched");
    // Unbatched, every message finds the worker waiting, and its receive and echo send are turns
    // of their own (each ends in a wait that returns at once).
    assert!(
        unbatched >= MESSAGES,
        "without a window the worker should wait per message: {unbatched} waits"
    );
    // Batched, the messages of one window share its turns (the wake-up, their receives, their
    // echoes): the ~100 ms of sending spans a few windows.
    assert!(
        batched <= MESSAGES / 4,
        "with a {WINDOW_US} µs window: {batched} waits for {MESSAGES} messages"
    );
}

/// The window only gathers what arrives while the worker sleeps after a turn: a message into a
/// worker quiet for longer than the window wakes it at once, and its exchange (a receive and a
/// send that complete as they are submitted) is not held for a window either. The bound below is
/// the contract of the feature, with a wide margin: the best of five tries must come back in under
/// half the (maximal) window, where a held exchange takes at least the whole window every time.
#[test]
fn a_message_into_a_quiet_worker_is_not_held_for_the_window() {
    if ringgate::ring::probe::check_min_wait().is_err() {
        eprintln!("skipped: this kernel has no io_uring min_wait (6.12+)");
        return;
    }
    const WINDOW: Duration = Duration::from_millis(100);
    let gw = Gateway::start(&[
        "--workers",
        "1",
        "--echo-path",
        "/echo",
        "--wake-batch-us",
        "100000",
    ]);
    let mut client = RawClient::connect(gw.addr, "/echo");
    let mut rtts = Vec::new();
    for i in 0..5 {
        // Longer than a window with nothing arriving: the worker's wait is past its window.
        std::thread::sleep(WINDOW + WINDOW / 2);
        let sent = std::time::Instant::now();
        client.send_frame(true, 1, format!("q{i}").as_bytes());
        let (_, _, payload) = client.read_frame().expect("an echo");
        rtts.push(sent.elapsed());
        assert_eq!(payload, format!("q{i}").as_bytes());
    }
    eprintln!("echo round trips into a quiet worker with a 100 ms window: {rtts:?}");
    let best = rtts.iter().min().unwrap();
    assert!(
        *best < WINDOW / 2,
        "every echo was held (best {best:?} of {rtts:?}) against a {WINDOW:?} window"
    );
}

#[test]
fn a_window_past_the_limit_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--wake-batch-us",
            "100001",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ringgate");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wake_batch_us"), "{err}");
}
