//! Helpers for the `ringgate load` tests: run the binary with a deadline, read its report.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A finished `ringgate load` run.
pub struct Run {
    pub status: ExitStatus,
    pub stderr: String,
    pub out: PathBuf,
}

impl Run {
    pub fn summary(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.out.join("summary.json"))
            .unwrap_or_else(|e| panic!("summary.json: {e}\nstderr:\n{}", self.stderr));
        serde_json::from_str(&text).unwrap()
    }

    /// Asserts exit status 0, showing stderr otherwise.
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.status.success(),
            "status {}\nstderr:\n{}",
            self.status,
            self.stderr
        );
        self
    }
}

/// Starts `ringgate load ARGS --out OUT` (stderr captured).
pub fn spawn(args: &[&str], out: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .arg("load")
        .args(args)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringgate load")
}

/// Waits for `child` at most `limit`, killing it (by its PID, through `Child::kill`) past that.
pub fn finish(mut child: Child, out: &Path, limit: Duration) -> Run {
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringgate load did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        status,
        stderr: reader.join().unwrap(),
        out: out.to_path_buf(),
    }
}

/// Runs `ringgate load ARGS` to completion (at most 50 s) with a fresh output directory.
pub fn run(args: &[&str]) -> (Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn(args, dir.path());
    (finish(child, dir.path(), Duration::from_secs(50)), dir)
}

pub fn u(v: &serde_json::Value, path: &str) -> u64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_u64()
        .unwrap_or_else(|| panic!("{path} is not a number in {v}"))
}
