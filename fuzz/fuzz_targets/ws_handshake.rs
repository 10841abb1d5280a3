//! Fuzzes the HTTP upgrade: `ws::handshake::parse_request`, `validate_upgrade`, the responses
//! built from their verdicts, and `query_param`.
//!
//! Input layout: `[flags, request..]`; `flags & 3` picks the `Limits` preset.
//!
//! Checked: parsing is resumable — the bytes arriving one at a time give `Partial` until some
//! prefix decides, and from there every longer prefix gives that same verdict (the I/O layer
//! re-parses the growing buffer on each receive); a complete head lies within the limit; an
//! accepted upgrade has a key that yields a well-formed 101; every error maps to a well-formed
//! response with its status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::phoenix::vsn_from_query;
use ringgate::ws::handshake::{
    accept_response, error_response, parse_request, query_param, validate_upgrade, Limits, Parse,
};

fn limits(preset: u8) -> Limits {
    match preset & 3 {
        0 => Limits::default(),
        1 => Limits {
            max_request_bytes: 64,
            max_headers: 2,
        },
        2 => Limits {
            max_request_bytes: 300,
            max_headers: 40,
        },
        _ => Limits {
            max_request_bytes: 0,
            max_headers: 0,
        },
    }
}

/// Parses a response we built and returns its status; panics if it is not HTTP/1.1.
fn response_status(bytes: &[u8]) -> u16 {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => {
            assert_eq!(resp.version, Some(1));
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                });
            if let Some(len) = len {
                assert_eq!(bytes.len() - n, len, "Content-Length");
            }
            resp.code.unwrap()
        }
        other => panic!("our response does not parse: {other:?}"),
    }
}

/// How many prefixes to check one by one; beyond it, a sample (the check is quadratic).
const EVERY_PREFIX_UP_TO: usize = 600;

fuzz_target!(|data: &[u8]| {
    let [flags, request @ ..] = data else {
        return;
    };
    let limits = limits(*flags);
    let verdict = parse_request(request, &limits);

    // Resumability: Partial, then one verdict for good.
    let prefixes = (0..request.len().min(EVERY_PREFIX_UP_TO))
        .chain((EVERY_PREFIX_UP_TO..request.len()).step_by(97))
        .chain(std::iter::once(request.len()));
    let mut decided: Option<(usize, Result<Parse, _>)> = None;
    for k in prefixes {
        let r = parse_request(&request[..k], &limits);
        match &decided {
            None if r == Ok(Parse::Partial) => {}
            None => decided = Some((k, r)),
            Some((at, first)) => assert_eq!(&r, first, "prefix {k} vs decided at {at}"),
        }
    }
    match decided {
        None => assert_eq!(verdict, Ok(Parse::Partial)),
        Some((_, first)) => assert_eq!(verdict, first),
    }
    if verdict == Ok(Parse::Partial) {
        assert!(
            request.len() <= limits.max_request_bytes,
            "partial past the limit"
        );
    }

    match verdict {
        Ok(Parse::Partial) => {}
        Ok(Parse::Complete { head, consumed }) => {
            assert!(consumed <= request.len() && consumed <= limits.max_request_bytes);
            assert!(request[..consumed].ends_with(b"\n"));
            assert!(!head.path.contains('?'));
            // What the Phoenix endpoint does with the query.
            let vsn = query_param(&head.query, "vsn");
            let _ = vsn_from_query(vsn.as_deref());
            let _ = query_param(&head.query, "token");
            match validate_upgrade(&head) {
                Ok(up) => {
                    assert_eq!(head.method, "GET");
                    assert_eq!(up.version, "13");
                    assert!(head.host.is_some());
                    // The 101 names a protocol the client offered; any offered token must
                    // fit a header line.
                    let protocol = up.protocols.first().map(String::as_str);
                    if let Some(p) = protocol {
                        assert!(!p.contains(['\r', '\n']), "{p:?}");
                    }
                    let resp = accept_response(&up.key, protocol);
                    assert_eq!(response_status(&resp), 101);
                }
                Err(e) => assert_eq!(response_status(&error_response(&e)), e.status),
            }
        }
        Err(e) => {
            assert!(matches!(e.status, 400 | 431), "{e:?}");
            assert_eq!(response_status(&error_response(&e)), e.status);
        }
    }
});
