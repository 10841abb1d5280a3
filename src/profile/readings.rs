//! What `profile` reads at each step: the gateway's memory as the kernel sees it
//! (`/proc/PID/smaps_rollup`), kernel memory (`/proc/meminfo`, `/proc/slabinfo`,
//! `/proc/net/sockstat`) and the gateway's own accounting (`GET /api/stats`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;

/// Slab caches a connection's kernel objects live in (docs/io_uring.md).
pub const CACHES: &[&str] = &[
    "TCP",
    "sock_inode_cache",
    "filp",
    "dentry",
    "io_kiocb",
    "lsm_inode_cache",
    "lsm_file_cache",
    "kmalloc-32",
    "kmalloc-64",
    "kmalloc-96",
    "kmalloc-128",
    "kmalloc-192",
    "kmalloc-256",
    "kmalloc-512",
    "kmalloc-1k",
];

/// One sample.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Open WebSocket connections the gateway reports.
    pub connections: u64,
    pub rss_bytes: u64,
    /// Private (clean + dirty) bytes: unlike Pss, not lowered when load processes started from the
    /// same binary share its text pages.
    pub private_bytes: u64,
    /// `/proc/meminfo` Slab (both ends of loopback connections are in this kernel).
    pub slab_bytes: u64,
    /// Active bytes per cache (`active_objs × objsize`), when /proc/slabinfo is readable.
    pub caches: BTreeMap<String, u64>,
    /// `/proc/net/sockstat` TCP inuse and mem (pages).
    pub tcp_inuse: u64,
    pub tcp_mem_pages: u64,
    /// The gateway's own accounting of its user-space memory, summed over workers.
    pub accounted_bytes: u64,
    pub accounted: BTreeMap<String, u64>,
}

/// `Rss` and private (clean + dirty) bytes of a process.
pub fn smaps_rollup(pid: u32) -> std::io::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |key| parse_meminfo(&text, key);
    Ok((
        field("Rss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
    ))
}

/// `/proc/meminfo` Slab, bytes.
pub fn slab_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    parse_meminfo(&text, "Slab:")
}

/// A `Key:   N kB` line of /proc's meminfo-style files, in bytes (0 when absent).
pub fn parse_meminfo(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Active bytes of the named caches from `/proc/slabinfo` text.
pub fn parse_slabinfo(text: &str, names: &[&str]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines().skip(2) {
        let mut f = line.split_whitespace();
        let (Some(name), Some(active), Some(_num), Some(size)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if names.contains(&name) {
            if let (Ok(a), Ok(s)) = (active.parse::<u64>(), size.parse::<u64>()) {
                out.insert(name.to_string(), a * s);
            }
        }
    }
    out
}

/// `TCP: inuse N ... mem M` from `/proc/net/sockstat` text.
pub fn parse_sockstat(text: &str) -> (u64, u64) {
    let line = text.lines().find(|l| l.starts_with("TCP:")).unwrap_or("");
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (value("inuse"), value("mem"))
}

/// A minimal HTTP GET (the admin API is on loopback and answers small JSON).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: ringgate\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP body"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "{path}: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.to_string())
}

/// Open connections and accounted memory (by kind, summed over workers) from `/api/stats`.
pub fn gateway_stats(admin: SocketAddr) -> std::io::Result<(u64, BTreeMap<String, u64>)> {
    let body = http_get(admin, "/api/stats")?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(std::io::Error::other)?;
    let mut open = 0;
    let mut mem = BTreeMap::new();
    for w in v["workers"].as_array().into_iter().flatten() {
        open += w["open"].as_u64().unwrap_or(0);
        for (k, val) in w["memory"].as_object().into_iter().flatten() {
            if k.ends_with("_bytes") {
                *mem.entry(k.clone()).or_insert(0) += val.as_u64().unwrap_or(0);
            }
        }
    }
    Ok((open, mem))
}

/// Active bytes of the connection caches (the objects a TCP connection lives in).
pub fn cache_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    parse_slabinfo(&text, CACHES).values().sum()
}

/// Takes every reading.
pub fn sample(pid: u32, admin: SocketAddr) -> std::io::Result<Sample> {
    let (rss_bytes, private_bytes) = smaps_rollup(pid)?;
    let (connections, accounted) = gateway_stats(admin)?;
    let slabinfo = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    let (tcp_inuse, tcp_mem_pages) =
        parse_sockstat(&std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default());
    Ok(Sample {
        connections,
        rss_bytes,
        private_bytes,
        slab_bytes: slab_bytes(),
        caches: parse_slabinfo(&slabinfo, CACHES),
        tcp_inuse,
        tcp_mem_pages,
        accounted_bytes: accounted.values().sum(),
        accounted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        assert_eq!(
            parse_meminfo("MemTotal: 10 kB\nSlab:     2048 kB\n", "Slab:"),
            2048 * 1024
        );
        let slab = "slabinfo - version: 2.1\n# name <active_objs> <num_objs> <objsize> ...\nTCP 100 120 2368 13 8 : tunables\nfilp 10 20 192 21 1 : x\nother 5 5 8 1 1\n";
        let caches = parse_slabinfo(slab, CACHES);
        assert_eq!(caches["TCP"], 236_800);
        assert_eq!(caches["filp"], 1920);
        assert!(!caches.contains_key("other"));
        let sockstat =
            "sockets: used 90\nTCP: inuse 12 orphan 0 tw 3 alloc 20 mem 7\nUDP: inuse 1 mem 0\n";
        assert_eq!(parse_sockstat(sockstat), (12, 7));
    }
}
