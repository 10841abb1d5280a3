//! `ringgate top` as a person runs it: in a real pseudo-terminal (a tmux session on its own
//! server socket), against a gateway holding a known load. The screen must show the exact
//! counts, and `q` (then, in a second run, Ctrl-C) must end it with status 0 and the terminal
//! restored (the alternate screen left). The last screen is kept in target/top-screen.txt. Also:
//! `serve`'s log lines are coloured on a terminal (a pipe gets none: tests/observability.rs).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{http_request, Gateway, RawClient};

const CLIENTS: usize = 7;
const BROADCASTS: usize = 3;
const KEY: &str = "top-secret";

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// `name`: tests of one process run in parallel, each needs its own server.
    fn new(name: &str) -> Self {
        Self {
            socket: format!("ringgate-top-test-{}-{name}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux (Debian package `tmux`; scripts/test.sh installs it)");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// Waits until the screen, with runs of spaces collapsed, contains every `want`.
    fn wait_for(&self, want: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            let flat = screen.split_whitespace().collect::<Vec<_>>().join(" ");
            if want.iter().all(|w| flat.contains(w)) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {want:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn exit_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ringgate-top-{}-{name}", std::process::id()))
}

/// Starts `top` in a fresh tmux window; its exit status goes to `exit`.
fn start_top(tmux: &Tmux, admin: std::net::SocketAddr, exit: &PathBuf) {
    let _ = std::fs::remove_file(exit);
    let cmd = format!(
        "RINGGATE_API_KEY={KEY} {} top --admin http://{admin}; echo $? > {}; echo top-ended; sleep 60",
        env!("CARGO_BIN_EXE_ringgate"),
        exit.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "150",
        "-y",
        "40",
        &cmd,
    ]);
}

fn wait_exit(tmux: &Tmux, exit: &PathBuf) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        // The shell creates the file before it writes the status into it: an empty read is
        // that moment, not an exit status.
        if let Ok(code) = std::fs::read_to_string(exit) {
            if !code.trim().is_empty() {
                return code.trim().to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("top did not exit:\n{}", tmux.screen());
}

#[test]
fn top_shows_the_counts_and_quits_cleanly() {
    let gw = Gateway::start(&["--workers", "2", "--api-key", KEY]);
    let mut clients: Vec<RawClient> = (0..CLIENTS)
        .map(|_| RawClient::connect(gw.addr, "/socket/websocket?vsn=2.0.0"))
        .collect();
    for c in &mut clients {
        c.send_frame(true, 1, br#"["1","1","rooms:top","phx_join",{}]"#);
        let (_, _, reply) = c.read_frame().expect("join reply");
        assert!(String::from_utf8_lossy(&reply).contains(r#""status":"ok""#));
    }
    for n in 0..BROADCASTS {
        let body = format!(r#"{{"topic":"rooms:top","event":"tick","payload":{{"n":{n}}}}}"#);
        let resp = http_request(
            gw.admin,
            &format!(
                "POST /api/broadcast HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .unwrap();
        assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    }
    for c in &mut clients {
        for _ in 0..BROADCASTS {
            c.read_frame().expect("a broadcast");
        }
    }

    let tmux = Tmux::new("counts");
    let exit = exit_file("q");
    start_top(&tmux, gw.admin, &exit);
    let screen = tmux.wait_for(&[
        "ringgate top",
        "2 workers",
        "live",
        &format!("connections {CLIENTS} "),
        &format!("open {CLIENTS} "),
        &format!("memberships {CLIENTS} "),
        "topics 1 ",
        &format!("deliveries {} ", CLIENTS * BROADCASTS),
        &format!("broadcasts {BROADCASTS} "),
        "worker conns open",
    ]);
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::write(target.join("top-screen.txt"), &screen);
    // One row per worker whose connection counts add up to CLIENTS.
    let rows: Vec<u64> = screen
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches(['│', ' ']).split_whitespace().collect();
            (cells.len() >= 3 && (cells[0] == "0" || cells[0] == "1"))
                .then(|| cells[1].parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), 2, "{screen}");
    assert_eq!(rows.iter().sum::<u64>(), CLIENTS as u64, "{screen}");
    // The rates settle at 0 with nothing happening (a second reading exists after ~1 s).
    tmux.wait_for(&["connects/s 0 ", "deliveries/s 0 "]);

    // A client leaves: the next refresh shows it.
    drop(clients.pop());
    tmux.wait_for(&[&format!("connections {} ", CLIENTS - 1)]);

    tmux.run(&["send-keys", "-t", "top", "q"]);
    assert_eq!(wait_exit(&tmux, &exit), "0");
    let after = tmux.wait_for(&["top-ended"]);
    assert!(
        !after.contains("ringgate top"),
        "the alternate screen was not left:\n{after}"
    );
    tmux.run(&["kill-session", "-t", "top"]);

    // Ctrl-C quits the same way.
    let exit = exit_file("ctrl-c");
    start_top(&tmux, gw.admin, &exit);
    tmux.wait_for(&["live", &format!("connections {} ", CLIENTS - 1)]);
    tmux.run(&["send-keys", "-t", "top", "C-c"]);
    assert_eq!(wait_exit(&tmux, &exit), "0");
    tmux.run(&["kill-session", "-t", "top"]);
    let _ = std::fs::remove_file(exit);
    let _ = std::fs::remove_file(exit_file("q"));
}

#[test]
fn top_without_the_key_says_so() {
    let gw = Gateway::start(&["--workers", "1", "--api-key", KEY]);
    let tmux = Tmux::new("nokey");
    let exit = exit_file("nokey");
    let _ = std::fs::remove_file(&exit);
    let cmd = format!(
        "env -u RINGGATE_API_KEY {} top --admin {}; echo $? > {}; sleep 60",
        env!("CARGO_BIN_EXE_ringgate"),
        gw.admin,
        exit.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "150",
        "-y",
        "20",
        &cmd,
    ]);
    tmux.wait_for(&["401: the admin API wants a key"]);
    tmux.run(&["send-keys", "-t", "top", "q"]);
    assert_eq!(wait_exit(&tmux, &exit), "0");
    let _ = std::fs::remove_file(exit);
}

#[test]
fn logs_are_coloured_on_a_terminal() {
    let tmux = Tmux::new("logs");
    let (port, admin) = (common::free_port(), common::free_port());
    let exit = exit_file("serve");
    let _ = std::fs::remove_file(&exit);
    let cmd = format!(
        "{} serve --listen 127.0.0.1:{port} --admin-listen 127.0.0.1:{admin} --workers 1 --drain-ms 0; echo $? > {}; sleep 60",
        env!("CARGO_BIN_EXE_ringgate"),
        exit.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "200",
        "-y",
        "20",
        &cmd,
    ]);
    tmux.wait_for(&["ringgate listening"]);
    // -e keeps the escape sequences: the INFO level is coloured on a terminal.
    let coloured = tmux.run(&["capture-pane", "-p", "-e", "-t", "top"]);
    assert!(
        coloured.contains("\x1b["),
        "no ANSI colour on a terminal:\n{coloured}"
    );
    // Ctrl-C drains and exits 0, logging the drain and each worker's exit.
    tmux.run(&["send-keys", "-t", "top", "C-c"]);
    assert_eq!(wait_exit(&tmux, &exit), "0");
    tmux.wait_for(&["draining", "worker exited"]);
    let _ = std::fs::remove_file(exit);
}
