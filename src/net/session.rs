//! Bytes in, protocol out: the upgrade request, then WebSocket frames, then the application.
//!
//! A receive buffer is processed in place (unmasked where it lies) and handed back at once; only
//! the bytes of an incomplete request head or frame are copied aside into `Conn::rx`, which exists
//! only while something is incomplete.

use bytes::Bytes;

use super::conn::{App, Phase, Req, Rx};
use super::rx_budget;
use crate::worker::Worker;
use crate::ws::{self, Decoded, Event, MessageReader, Role};

impl Worker {
    /// Handles bytes received on `slot`. `data` is the receive buffer, processed in place.
    ///
    /// Bytes kept for later (an incomplete frame or request head) and a fragmented message in
    /// progress are charged to the worker's receive budget (`net::rx_budget`); input that would
    /// take it past `max_rx_bytes_per_worker` closes the connection instead of growing memory.
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
                let rest_of_rx = rx_budget::footprint(r);
                if !self.grow_pending(slot, r.charge.bytes(), rest_of_rx, &mut pending, data) {
                    return self.over_rx_budget(slot);
                }
                pending.extend_from_slice(data);
                let used = self.consume(slot, &mut pending, &mut rx);
                pending.drain(..used);
                if used > 0 {
                    // A frame (or the request head) completed: keep no capacity beyond what the
                    // rest needs, so a finished large frame does not stay pinned.
                    pending.shrink_to_fit();
                }
                if let Some(r) = rx.as_mut() {
                    r.pending = pending;
                }
            }
            None => {
                let used = self.consume(slot, data, &mut rx);
                let rest = &data[used..];
                if !rest.is_empty() && self.conns[slot as usize].is_live() {
                    let r = rx.get_or_insert_with(Box::<Rx>::default);
                    let mut pending = std::mem::take(&mut r.pending);
                    let rest_of_rx = rx_budget::footprint(r);
                    if !self.grow_pending(slot, r.charge.bytes(), rest_of_rx, &mut pending, rest) {
                        return self.over_rx_budget(slot);
                    }
                    pending.extend_from_slice(rest);
                    r.pending = pending;
                }
            }
        }
        let c = &mut self.conns[slot as usize];
        if !c.is_live() {
            return;
        }
        let mut rx = rx.filter(|r| !r.pending.is_empty() || r.reader.is_some());
        if let Some(r) = rx.as_mut() {
            // A fragmented message grows inside the decoder, one receive at a time: checked here,
            // right after the receive that grew it.
            let (current, wanted) = (r.charge.bytes(), rx_budget::footprint(r));
            if !self.rx_budget.allows(current, wanted) {
                return self.over_rx_budget(slot);
            }
            self.rx_budget.settle(r);
        }
        self.conns[slot as usize].rx = rx;
    }

    /// Makes room in `pending` for the bytes `next` if the budget allows it; false if not.
    /// `charged` is what the connection's receive state is charged now, `rest_of_rx` what it holds
    /// besides `pending`. Once a frame's header is in, the whole frame is reserved
    /// at once: a connection admitted under the bound can always complete the frame it started,
    /// and one that cannot have its frame's memory is refused before it sends the rest. Otherwise
    /// (a request head, or several frames) growth doubles.
    fn grow_pending(
        &self,
        slot: u32,
        charged: usize,
        rest_of_rx: usize,
        pending: &mut Vec<u8>,
        next: &[u8],
    ) -> bool {
        let want = pending.len() + next.len();
        let cap = pending.capacity();
        if want <= cap {
            return true;
        }
        let other = rest_of_rx;
        let mut head = [0u8; 14];
        let n = pending.len().min(head.len());
        head[..n].copy_from_slice(&pending[..n]);
        let m = next.len().min(head.len() - n);
        head[n..n + m].copy_from_slice(&next[..m]);
        let new_cap = match self.frame_bytes(slot, &head[..n + m]) {
            Some(total) if total >= want => total,
            _ => {
                let doubled = want.max(cap.saturating_mul(2));
                if self.rx_budget.allows(charged, other + doubled) {
                    doubled
                } else {
                    want
                }
            }
        };
        if !self.rx_budget.allows(charged, other + new_cap) {
            return false;
        }
        pending.reserve_exact(new_cap - pending.len());
        true
    }

    /// Header plus payload bytes of the frame starting at `head`, once its header is complete
    /// (WebSocket connections only). `None` for a frame over `max_frame_bytes`: the decoder
    /// refuses it (1009) as soon as it sees the header, and nothing is reserved for it.
    fn frame_bytes(&self, slot: u32, head: &[u8]) -> Option<usize> {
        if self.conns[slot as usize].phase() != Phase::Open {
            return None;
        }
        match ws::frame::decode_header(head) {
            Ok(Some((h, header_len))) => {
                let payload = usize::try_from(h.payload_len).ok()?;
                (payload <= self.ws_limits.max_frame_bytes).then_some(header_len + payload)
            }
            _ => None,
        }
    }

    /// The connection's input would take the worker past `max_rx_bytes_per_worker`: close it
    /// with 1009 (an HTTP 503 if it is still upgrading). Its receive state is dropped, which gives
    /// its charge back.
    fn over_rx_budget(&mut self, slot: u32) {
        self.stats.rx_budget_closes += 1;
        tracing::debug!(
            worker = self.id,
            slot,
            held = self.rx_budget.held(),
            "receive memory limit reached"
        );
        match self.conns[slot as usize].phase() {
            Phase::Handshake => self.http_error(
                slot,
                &ws::handshake::HttpError {
                    status: 503,
                    reason: "receive memory limit reached",
                },
            ),
            _ => self.close_with(
                slot,
                ws::close::MESSAGE_TOO_BIG,
                "receive memory limit reached",
            ),
        }
        self.conns[slot as usize].rx = None;
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
