//! The HTTP side of a connection: the upgrade request, routing by path, and plain responses.

use bytes::Bytes;

use super::conn::{App, Phase};
use crate::worker::{Deadline, Worker};
use crate::ws::handshake::{self, HttpError, Parse, RequestHead};

/// Liveness probe path, answered on the public listener too (load balancers probe it there).
pub const HEALTHZ_PATH: &str = "/healthz";

impl Worker {
    /// Parses the request head in `buf`. Returns the bytes it used once the connection has moved
    /// on (upgraded, or answered and closing); `None` while the head is incomplete or after an error.
    pub(crate) fn handshake(&mut self, slot: u32, buf: &[u8]) -> Option<usize> {
        match handshake::parse_request(buf, &self.http_limits) {
            Ok(Parse::Partial) => None,
            Ok(Parse::Complete { head, consumed }) => {
                self.route(slot, &head);
                Some(consumed)
            }
            Err(err) => {
                self.http_error(slot, &err);
                None
            }
        }
    }

    fn route(&mut self, slot: u32, head: &RequestHead) {
        if head.path == HEALTHZ_PATH && head.upgrade.is_none() {
            if head.method != "GET" && head.method != "HEAD" {
                return self.http_error(
                    slot,
                    &HttpError {
                        status: 405,
                        reason: "method not allowed",
                    },
                );
            }
            let response = handshake::simple_response(200, "text/plain", b"ok\n");
            self.stats.http_responses += 1;
            self.close_after(slot, Bytes::from(response));
            return;
        }
        if head.path == self.cfg.phoenix_path {
            return self.phoenix_upgrade(slot, head);
        }
        if self.cfg.echo_path.as_deref() == Some(head.path.as_str()) {
            return self.upgrade(slot, head, App::Echo, None);
        }
        self.http_error(
            slot,
            &HttpError {
                status: 404,
                reason: "no such endpoint",
            },
        );
    }

    /// The Phoenix endpoint: serializer from `vsn` (403 when unknown), then the token when auth is
    /// on (403 when missing or invalid, before any upgrade).
    fn phoenix_upgrade(&mut self, slot: u32, head: &RequestHead) {
        let vsn = handshake::query_param(&head.query, "vsn");
        let Some(vsn) = crate::phoenix::vsn_from_query(vsn.as_deref()) else {
            return self.http_error(
                slot,
                &HttpError {
                    status: 403,
                    reason: "unsupported vsn",
                },
            );
        };
        match self.verify_token(crate::auth::token_from_request(head).as_deref()) {
            Ok(Some(claims)) => self.apply_claims(slot, claims),
            Ok(None) => {}
            Err(e) => {
                self.stats.auth_failures += 1;
                tracing::debug!(worker = self.id, slot, reason = %e, "connect refused");
                return self.http_error(
                    slot,
                    &HttpError {
                        status: 403,
                        reason: "forbidden",
                    },
                );
            }
        }
        // phoenix.js offers "phoenix" (plus a token entry) when it authenticates by subprotocol.
        let offers_phoenix = head
            .upgrade
            .as_ref()
            .is_some_and(|u| u.protocols.iter().any(|p| p == "phoenix"));
        self.upgrade(
            slot,
            head,
            App::Phoenix(vsn),
            offers_phoenix.then_some("phoenix"),
        );
    }

    fn origin_allowed(&self, head: &RequestHead) -> bool {
        let allowed = &self.cfg.allowed_origins;
        match &head.origin {
            Some(origin) => allowed.is_empty() || allowed.iter().any(|a| a == origin),
            // Non-browser clients send no Origin; the allowlist is a browser protection.
            None => true,
        }
    }

    fn upgrade(&mut self, slot: u32, head: &RequestHead, app: App, protocol: Option<&str>) {
        let request = match handshake::validate_upgrade(head) {
            Ok(r) => r,
            Err(err) => return self.http_error(slot, &err),
        };
        if !self.origin_allowed(head) {
            return self.http_error(
                slot,
                &HttpError {
                    status: 403,
                    reason: "origin not allowed",
                },
            );
        }
        let response = handshake::accept_response(&request.key, protocol);
        self.advance(slot, Phase::Open);
        self.conns[slot as usize].app = app;
        self.stats.upgrades += 1;
        self.send_frame(slot, Bytes::from(response));
        self.set_deadline(slot, Deadline::Idle);
        tracing::debug!(worker = self.id, slot, path = %head.path, "upgraded");
    }

    pub(crate) fn http_error(&mut self, slot: u32, err: &HttpError) {
        tracing::debug!(
            worker = self.id,
            slot,
            status = err.status,
            reason = err.reason,
            "http error"
        );
        self.stats.http_responses += 1;
        self.close_after(slot, Bytes::from(handshake::error_response(err)));
    }
}
