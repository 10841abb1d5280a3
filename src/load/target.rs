//! Where the load goes: the `ws://` URL and the source addresses (`--source`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};

/// Most source addresses one run binds: 65,536 covers a /16, far beyond what one box needs
/// (each address gives ~28k connections per server address).
pub const MAX_SOURCES: usize = 65_536;

/// A parsed `ws://host[:port]/path?query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `Host` header value: `host` or `host:port` as written.
    pub host_header: String,
    pub addr: SocketAddrV4,
    /// Path and query; `None` when the URL has none (or just `/`).
    pub target: Option<String>,
}

/// Parses and resolves `url` (IPv4 only: sockets are created as `AF_INET`).
pub fn parse_url(url: &str) -> Result<WsUrl, String> {
    let rest = if let Some(r) = url.strip_prefix("ws://") {
        r
    } else if url.starts_with("wss://") {
        return Err(format!(
            "{url}: wss:// (TLS) is not supported; put a TLS-terminating proxy in front or load the plain ws:// port"
        ));
    } else {
        return Err(format!(
            "{url}: expected a ws:// URL, e.g. ws://127.0.0.1:4000/socket/websocket"
        ));
    };
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let with_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{url}: cannot resolve {authority}: {e}"))?
        .find_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("{url}: {authority} has no IPv4 address (IPv6 is not supported)"))?;
    let target = match target {
        "" | "/" => None,
        t if t.starts_with('?') => Some(format!("/{t}")),
        t => Some(t.to_string()),
    };
    Ok(WsUrl {
        host_header: authority.to_string(),
        addr,
        target,
    })
}

/// Parses `--source`: `A.B.C.D`, a range `A.B.C.D-E.F.G.H` (inclusive), or a comma list of those.
pub fn parse_sources(spec: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |s: &str| {
            s.parse::<Ipv4Addr>()
                .map_err(|_| format!("--source: {s:?} is not an IPv4 address"))
        };
        let (lo, hi) = (u32::from(parse(lo)?), u32::from(parse(hi)?));
        if lo > hi {
            return Err(format!("--source: range {part} runs backwards"));
        }
        if out.len() + (hi - lo) as usize + 1 > MAX_SOURCES {
            return Err(format!("--source: more than {MAX_SOURCES} addresses"));
        }
        out.extend((lo..=hi).map(Ipv4Addr::from));
    }
    if out.is_empty() {
        return Err("--source: no address given".into());
    }
    Ok(out)
}

/// A `sockaddr_in` for `ip:port` (network byte order, as the kernel wants it).
pub fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("ws://127.0.0.1:4000/socket/websocket?vsn=2.0.0").unwrap();
        assert_eq!(u.host_header, "127.0.0.1:4000");
        assert_eq!(u.addr, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(u.target.as_deref(), Some("/socket/websocket?vsn=2.0.0"));
        assert_eq!(parse_url("ws://127.0.0.1:9").unwrap().target, None);
        assert_eq!(parse_url("ws://127.0.0.1:9/").unwrap().target, None);
        assert_eq!(
            parse_url("ws://127.0.0.1:9?a=1").unwrap().target.as_deref(),
            Some("/?a=1")
        );
        assert_eq!(parse_url("ws://localhost/x").unwrap().addr.port(), 80);
        assert!(parse_url("wss://x/").unwrap_err().contains("not supported"));
        assert!(parse_url("http://x/")
            .unwrap_err()
            .contains("expected a ws:// URL"));
    }

    #[test]
    fn sources() {
        let s = parse_sources("127.0.0.2-127.0.0.4, 10.0.0.1").unwrap();
        assert_eq!(
            s,
            vec![
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 3),
                Ipv4Addr::new(127, 0, 0, 4),
                Ipv4Addr::new(10, 0, 0, 1)
            ]
        );
        assert!(parse_sources("127.0.0.9-127.0.0.2")
            .unwrap_err()
            .contains("backwards"));
        assert!(parse_sources("x").unwrap_err().contains("not an IPv4"));
        assert!(parse_sources("10.0.0.0-10.2.0.0")
            .unwrap_err()
            .contains("more than"));
        let a = sockaddr(Ipv4Addr::new(127, 0, 0, 1), 4000);
        assert_eq!(u16::from_be(a.sin_port), 4000);
    }
}
