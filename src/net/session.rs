//! Bytes in, protocol out: the upgrade request, then WebSocket frames, then the application.
//!
//! A receive buffer is processed in place (unmasked where it lies) and handed back at once; only
//! the bytes of an incomplete request head or frame are copied aside into `Conn::rx`, which exists
//! only while something is incomplete.

use bytes::Bytes;

use super::conn::{App, Phase, Req, Rx};
use crate::worker::Worker;
use crate::ws::{self, Decoded, Event, MessageReader, Role};

impl Worker {
    /// Handles bytes received on `slot`. `data` is the receive buffer, processed in place.
    pub(crate) fn on_bytes(&mut self, slot: u32, data: &mut [u8]) {
        let c = &mut self.conns[slot as usize];
        if !c.is_live() {
            // Closing or half-closed: input after our close frame is discarded (RFC 6455 7.1.1).
            return;
        }
        let mut rx = c.rx.take();
        match rx.as_mut().filter(|r| !r.pending.is_empty()) {
            Some(r) => {
                let mut pending = std::mem::take(&mut r.pending);
                pending.extend_from_slice(data);
                let used = self.consume(slot, &mut pending, &mut rx);
                pending.drain(..used);
                if let Some(r) = rx.as_mut() {
                    r.pending = pending;
                }
            }
            None => {
                let used = self.consume(slot, data, &mut rx);
                if used < data.len() {
                    rx.get_or_insert_with(Box::<Rx>::default)
                        .pending
                        .extend_from_slice(&data[used..]);
                }
            }
        }
        let c = &mut self.conns[slot as usize];
        if c.is_live() {
            c.rx = rx.filter(|r| !r.pending.is_empty() || r.reader.is_some());
        }
    }

    /// Consumes what it can from `buf`; returns the bytes used. Unused bytes are an incomplete
    /// request head or frame.
    fn consume(&mut self, slot: u32, buf: &mut [u8], rx: &mut Option<Box<Rx>>) -> usize {
        let mut used = 0;
        if self.conns[slot as usize].phase() == Phase::Handshake {
            if self.conns[slot as usize].life.in_flight(Req::PeerName) {
                // Not admitted yet (per-address limit): keep the request until it is.
                return 0;
            }
            match self.handshake(slot, buf) {
                Some(n) => used = n,
                None => return 0,
            }
        }
        if self.conns[slot as usize].phase() != Phase::Open {
            return buf.len();
        }
        let mut reader = rx
            .as_mut()
            .and_then(|r| r.reader.take())
            .unwrap_or_else(|| MessageReader::new(Role::Server));
        let limits = self.ws_limits;
        while self.conns[slot as usize].phase() == Phase::Open && used < buf.len() {
            match reader.decode(&mut buf[used..], &limits) {
                Ok(Decoded::NeedMore) => break,
                Ok(Decoded::Frame { consumed, event }) => {
                    used += consumed;
                    if let Some(event) = event {
                        self.on_event(slot, event);
                    }
                }
                Err(violation) => {
                    self.stats.protocol_errors += 1;
                    tracing::debug!(
                        worker = self.id,
                        slot,
                        code = violation.code,
                        reason = violation.reason,
                        "protocol violation"
                    );
                    self.close_with(slot, violation.code, violation.reason);
                    return buf.len();
                }
            }
        }
        if reader.in_message() {
            rx.get_or_insert_with(Box::<Rx>::default).reader = Some(reader);
        }
        used
    }

    fn on_event(&mut self, slot: u32, event: Event<'_>) {
        if matches!(event, Event::Text(_) | Event::Binary(_) | Event::Ping(_))
            && !self.take_tokens(slot, 1)
        {
            self.stats.rate_limited += 1;
            tracing::debug!(worker = self.id, slot, "message rate limit exceeded");
            self.close_with(
                slot,
                ws::close::POLICY_VIOLATION,
                "message rate limit exceeded",
            );
            return;
        }
        match event {
            Event::Text(text) => {
                self.stats.messages_in += 1;
                self.on_message(slot, ws::frame::opcode::TEXT, text.as_bytes());
            }
            Event::Binary(data) => {
                self.stats.messages_in += 1;
                self.on_message(slot, ws::frame::opcode::BINARY, data);
            }
            Event::Ping(payload) => {
                let pong = ws::frame::server_frame(ws::frame::opcode::PONG, payload);
                self.send_frame(slot, pong);
            }
            Event::Pong(_) => {}
            Event::Close(status) => {
                // Echo the peer's status code (RFC 6455 5.5.1), then half-close.
                let frame = match status {
                    Some((code, _)) => ws::frame::server_close_frame(code, ""),
                    None => ws::frame::server_frame(ws::frame::opcode::CLOSE, &[]),
                };
                self.close_after(slot, frame);
            }
        }
    }

    fn on_message(&mut self, slot: u32, opcode: u8, payload: &[u8]) {
        match self.conns[slot as usize].app {
            App::Echo => {
                let frame: Bytes = ws::frame::server_frame(opcode, payload);
                self.send_frame(slot, frame);
            }
            App::Phoenix(vsn) => self.on_phoenix(slot, vsn, opcode, payload),
            App::None => {}
        }
    }
}
