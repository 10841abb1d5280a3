//! Where `top` gets its figures: `GET /api/stats` on the admin port (the snapshot the dashboard
//! reads), over a plain blocking HTTP/1.1 request with the API key as a bearer header, and the
//! rates between two polls.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Connect and read caps: a gateway's admin port answers in milliseconds; a dead one must not
/// freeze the screen for longer than a refresh or two.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest response accepted (a snapshot is ~1 KiB per worker).
const MAX_RESPONSE_BYTES: u64 = 8 << 20;

/// The admin address from `--admin`: `http://HOST:PORT[/]` or `HOST:PORT`.
pub fn parse_admin(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.starts_with("https://") || url.starts_with("https://") {
        return Err("https is not supported: the admin port speaks plain HTTP".into());
    }
    let host_port = rest.trim_end_matches('/');
    if host_port.contains('/') {
        return Err(format!(
            "{url}: give the admin port's base URL, without a path"
        ));
    }
    let addr = host_port
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    Ok((addr, host_port.to_string()))
}

/// One `GET /api/stats`.
pub fn stats(addr: SocketAddr, host: &str, key: Option<&str>) -> Result<Value, String> {
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(READ_TIMEOUT)).ok();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        s,
        "GET /api/stats HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n{auth}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the admin port sent no HTTP response")?;
    let status = head.lines().next().unwrap_or("");
    if status.contains(" 401 ") {
        return Err("401: the admin API wants a key (--api-key or RINGGATE_API_KEY)".into());
    }
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("/api/stats answered {status}"));
    }
    serde_json::from_str(body).map_err(|e| format!("/api/stats is not JSON: {e}"))
}

/// A snapshot with the rates since the previous one.
pub struct Reading {
    pub at: Instant,
    pub stats: Value,
}

pub fn u(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

/// Per-second rate of the counter at `path` between two readings (`None` on the first reading or
/// after a restart, when the counter went down).
pub fn rate(now: &Reading, before: Option<&Reading>, path: &[&str]) -> Option<f64> {
    let before = before?;
    let dt = now.at.duration_since(before.at).as_secs_f64();
    let (a, b) = (u(&before.stats, path)?, u(&now.stats, path)?);
    (dt > 0.0 && b >= a).then(|| (b - a) as f64 / dt)
}

/// The p99 delivery latency between two readings, as the upper bound of its bucket in µs
/// (`u64::MAX` for the `+Inf` bucket); `None` when nothing was delivered in between.
pub fn latency_p99(now: &Value, before: &Value) -> Option<u64> {
    let get = |v: &Value| -> Option<(Vec<u64>, u64)> {
        let l = v.get("summary")?.get("delivery_latency")?;
        let buckets = l
            .get("buckets")?
            .as_array()?
            .iter()
            .map(|b| b.as_u64().unwrap_or(0))
            .collect();
        Some((buckets, l.get("count")?.as_u64()?))
    };
    let bounds: Vec<u64> = now
        .pointer("/summary/delivery_latency/bounds_us")?
        .as_array()?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let ((nb, nc), (bb, bc)) = (get(now)?, get(before)?);
    let count = nc.checked_sub(bc).filter(|&c| c > 0)?;
    let want = (count * 99).div_ceil(100);
    let mut cum = 0;
    for (i, n) in nb.iter().enumerate() {
        cum += n.saturating_sub(*bb.get(i).unwrap_or(&0));
        if cum >= want {
            return Some(bounds.get(i).copied().unwrap_or(u64::MAX));
        }
    }
    Some(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn admin_urls() {
        assert_eq!(
            parse_admin("http://127.0.0.1:4001/").unwrap().0,
            "127.0.0.1:4001".parse().unwrap()
        );
        assert_eq!(
            parse_admin("127.0.0.1:9").unwrap().0,
            "127.0.0.1:9".parse().unwrap()
        );
        assert!(parse_admin("https://x:1").is_err());
        assert!(parse_admin("http://127.0.0.1:1/api").is_err());
    }

    #[test]
    fn p99_is_the_bucket_holding_the_99th_percent() {
        let snap = |buckets: [u64; 3], count| {
            json!({"summary": {"delivery_latency": {"bounds_us": [100, 1000],
                "buckets": buckets, "count": count, "sum_us": 0}}})
        };
        let before = snap([0, 0, 0], 0);
        assert_eq!(latency_p99(&snap([99, 1, 0], 100), &before), Some(100));
        assert_eq!(latency_p99(&snap([98, 2, 0], 100), &before), Some(1000));
        assert_eq!(latency_p99(&snap([0, 0, 1], 1), &before), Some(u64::MAX));
        assert_eq!(latency_p99(&before, &before), None);
    }
}
