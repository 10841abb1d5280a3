//! `ringgate profile` on a small ramp: it starts a gateway, drives `ringgate load`, and reports
//! bytes per connection with fits; the figures must be in a plausible range and the files exist.

use std::process::Command;

#[test]
fn small_ramp_produces_the_table_json_and_chart() {
    let out = std::env::temp_dir().join(format!("ringgate-profile-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .args([
            "profile",
            "--max",
            "4000",
            "--step",
            "1000",
            "--settle-ms",
            "1000",
            "--json",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("run ringgate profile");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON on stdout");
    let slope = |k: &str| p[k]["slope"].as_f64().unwrap();
    let r2 = |k: &str| p[k]["r2"].as_f64().unwrap();
    // User space: the budget is 128 B per idle joined connection; allow noise, catch regressions
    // of the kind a per-connection buffer would cause (kilobytes).
    assert!(
        (0.0..1024.0).contains(&slope("rss")),
        "rss slope {}",
        slope("rss")
    );
    assert!(r2("rss") > 0.5, "rss fit R² {}", r2("rss"));
    // The gateway's own accounting is exact: Conn + wheel entry, nothing else while idle.
    assert!(
        (64.0..=128.0).contains(&slope("accounted")),
        "accounted {}",
        slope("accounted")
    );
    // Kernel, server side: a TCP socket and its wait (~3.9 KB here).
    let kernel = p["kernel_bytes_per_conn"].as_f64().unwrap();
    assert!(
        (2000.0..8000.0).contains(&kernel),
        "kernel bytes/conn {kernel}"
    );
    assert_eq!(p["steps"].as_array().unwrap().len(), 5);
    assert_eq!(p["steps"][4]["connections"], 4000);
    let json = std::fs::read_to_string(out.join("profile.json")).unwrap();
    assert!(json.contains("kernel_bytes_per_conn"));
    let svg = std::fs::read_to_string(out.join("profile.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "chart has no lines"
    );
    std::fs::remove_dir_all(out).unwrap();
}
