//! Phoenix Channels, sans-IO: the wire formats (V1 JSON objects, V2 JSON arrays, V2 binary
//! frames) and the per-connection channel rules a Phoenix server applies, so the official
//! JS client's join, rejoin, heartbeat and timeout logic works against ringgate unmodified.
//!
//! Nothing here does I/O or WebSocket framing. The worker hands in the *payload* of a
//! complete WebSocket message and gets back decisions as values: frames to send (payload
//! bytes plus whether they go out as a text or a binary WebSocket message), broadcasts to
//! fan out, subscriptions to change — all through the [`channels::Host`] trait it implements.
//!
//! # Layout
//! - [`serializer`]: decode client frames into a borrowed [`serializer::Message`] whose
//!   payload stays raw JSON (the gateway routes, it never re-parses payloads); encode
//!   replies, pushes and broadcasts byte-exact with what Phoenix sends.
//! - [`router`]: which topics may be joined (`rooms:*`) and what a client push on them does
//!   (broadcast to the topic, or reject).
//! - [`channels`]: the joined topics of one connection, stored in a few bytes (topics are
//!   interned by the host), and `handle`, which applies the server rules of `docs/protocol.md`.
//!
//! # Versions
//! The client picks the serializer with the `vsn` query parameter of the upgrade request;
//! see [`vsn_from_query`]. The version is fixed for the connection's life and passed to
//! every decode, encode and `handle` call.

pub mod broadcast;
pub mod channels;
pub mod router;
pub mod serializer;

/// The serializer a connection speaks, chosen once at the upgrade from its `vsn` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vsn {
    /// `vsn=1.x` or no `vsn`: JSON objects `{"topic","event","payload","ref"}`, no join_ref
    /// on the wire, text only (no binary payloads).
    V1,
    /// `vsn=2.x`: JSON arrays `[join_ref, ref, topic, event, payload]`, plus binary frames
    /// for binary payloads.
    V2,
}

/// Maps the `vsn` query parameter of the upgrade request to a serializer; `None` means the
/// caller must refuse the upgrade with HTTP 403, as Phoenix does for a `vsn` that matches
/// no serializer.
///
/// No parameter means `1.0.0` (Phoenix's default). Accepted forms are `MAJOR`,
/// `MAJOR.MINOR` and `MAJOR.MINOR.PATCH` in ASCII digits, with major 1 or 2. This is more
/// lenient than Phoenix, which requires a full semver matching `~> 1.0.0` or `~> 2.0.0`
/// (so Phoenix refuses `2`, `2.1.0`): accepting a future minor of a major we speak costs
/// nothing and the wire format is defined by the major alone. An empty value is refused
/// (Phoenix also refuses `vsn=`: an empty string is not a version).
pub fn vsn_from_query(vsn: Option<&str>) -> Option<Vsn> {
    let Some(vsn) = vsn else {
        return Some(Vsn::V1);
    };
    let mut parts = vsn.split('.');
    let major = parts.next()?;
    let mut count = 0;
    for part in std::iter::once(major).chain(parts.by_ref()) {
        count += 1;
        if count > 3 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    // Comparing the text, not a parsed number, also refuses "01" and "002".
    match major {
        "1" => Some(Vsn::V1),
        "2" => Some(Vsn::V2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsn_defaults_to_v1_without_a_parameter() {
        assert_eq!(vsn_from_query(None), Some(Vsn::V1));
    }

    #[test]
    fn vsn_accepts_major_minor_patch_forms() {
        assert_eq!(vsn_from_query(Some("1.0.0")), Some(Vsn::V1));
        assert_eq!(vsn_from_query(Some("1")), Some(Vsn::V1));
        assert_eq!(vsn_from_query(Some("1.2")), Some(Vsn::V1));
        assert_eq!(vsn_from_query(Some("2.0.0")), Some(Vsn::V2));
        assert_eq!(vsn_from_query(Some("2")), Some(Vsn::V2));
        assert_eq!(vsn_from_query(Some("2.1.7")), Some(Vsn::V2));
    }

    #[test]
    fn vsn_refuses_other_majors_and_malformed_values() {
        for bad in [
            "", "3.0.0", "0.9.0", "01.0.0", "2.0.0.0", "2.", ".2", "2..0", "v2", "2.0.0-rc", "2.x",
            " 2", "２", "-1",
        ] {
            assert_eq!(vsn_from_query(Some(bad)), None, "{bad:?}");
        }
    }
}
