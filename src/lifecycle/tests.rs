//! The lifecycle without a kernel: every order of completions ends in exactly one close, submitted
//! only once nothing is in flight.

use super::*;

#[derive(Debug, Default)]
struct Recorder {
    cancels: Vec<Req>,
    closes: u32,
}

impl Submit for Recorder {
    fn cancel(&mut self, _slot: u32, _gen: u32, req: Req) {
        self.cancels.push(req);
    }
    fn close(&mut self, _slot: u32, _gen: u32) {
        self.closes += 1;
    }
}

/// What a completion does to the connection, as an owner handles it.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Success: the owner carries on.
    Ok,
    /// An error result (EPIPE, ECONNRESET, EOF, ECANCELED): the owner aborts.
    Fail,
}

/// An owner's completion handler, reduced to what the lifecycle sees: clear the bit, maybe abort,
/// always settle.
fn complete(life: &mut Life, rec: &mut Recorder, req: Req, more: bool, outcome: Outcome) {
    life.completed(req, more);
    if let Outcome::Fail = outcome {
        life.abort(1, 7, rec);
    }
    life.settle(1, 7, rec);
}

fn open_with(reqs: &[Req]) -> Life {
    let mut life = Life::FREE;
    life.start(Phase::Handshake);
    assert!(life.advance(Phase::Open));
    for &r in reqs {
        life.submitted(r);
    }
    life
}

#[test]
fn send_error_and_eof_in_one_batch_close_the_slot_once() {
    // The leak: a multishot receive and a send in flight; the peer resets. The send fails (EPIPE)
    // and the receive reports EOF in the same batch. The second report must still close the slot.
    let mut rec = Recorder::default();
    let mut life = open_with(&[Req::Recv, Req::Send]);
    complete(&mut life, &mut rec, Req::Send, false, Outcome::Fail);
    assert_eq!(life.phase(), Phase::Aborting);
    assert_eq!(rec.cancels, vec![Req::Recv]);
    assert_eq!(rec.closes, 0, "the receive is still in flight");
    complete(&mut life, &mut rec, Req::Recv, false, Outcome::Fail);
    assert_eq!(rec.closes, 1);
    assert_eq!(life.phase(), Phase::Releasing);
    life.released();
    assert_eq!(life, Life::FREE);
}

#[test]
fn a_cancel_that_loses_the_race_still_ends_in_one_close() {
    // The send completes successfully after the abort issued its cancel; the cancel's own
    // completion (ENOENT) is not a connection request and changes nothing.
    let mut rec = Recorder::default();
    let mut life = open_with(&[Req::Poll, Req::Send]);
    assert!(life.abort(1, 7, &mut rec));
    assert!(!life.abort(1, 7, &mut rec), "abort is idempotent");
    assert_eq!(rec.cancels, vec![Req::Poll, Req::Send]);
    complete(&mut life, &mut rec, Req::Send, false, Outcome::Ok);
    assert_eq!(rec.closes, 0);
    complete(&mut life, &mut rec, Req::Poll, false, Outcome::Fail);
    assert_eq!(rec.closes, 1);
}

#[test]
fn a_multishot_completion_with_more_keeps_its_request_in_flight() {
    let mut rec = Recorder::default();
    let mut life = open_with(&[Req::Recv]);
    complete(&mut life, &mut rec, Req::Recv, true, Outcome::Ok);
    assert!(life.in_flight(Req::Recv));
    life.abort(1, 7, &mut rec);
    // Data that raced the cancel: F_MORE still set, nothing may close yet.
    complete(&mut life, &mut rec, Req::Recv, true, Outcome::Ok);
    assert_eq!(rec.closes, 0);
    complete(&mut life, &mut rec, Req::Recv, false, Outcome::Fail);
    assert_eq!(rec.closes, 1);
}

#[test]
fn an_idle_abort_closes_at_once() {
    let mut rec = Recorder::default();
    let mut life = open_with(&[]);
    life.abort(1, 7, &mut rec);
    life.settle(1, 7, &mut rec);
    assert_eq!(rec.closes, 1);
    life.settle(1, 7, &mut rec);
    assert_eq!(rec.closes, 1, "settle closes once");
}

fn permutations(items: &[Req]) -> Vec<Vec<Req>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first);
            out.push(p);
        }
    }
    out
}

#[test]
fn every_order_of_completions_closes_exactly_once_after_the_last() {
    let all = [
        Req::Poll,
        Req::Recv,
        Req::Send,
        Req::Shutdown,
        Req::PeerName,
    ];
    let mut cases = 0;
    for subset_bits in 1u32..(1 << all.len()) {
        let subset: Vec<Req> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| subset_bits & (1 << i) != 0)
            .map(|(_, &r)| r)
            .collect();
        for order in permutations(&subset) {
            // The abort comes from outside (a deadline, a protocol error) before completion k,
            // or from completion k failing; every k, both ways.
            for k in 0..=order.len() {
                for failing in [false, true] {
                    let mut rec = Recorder::default();
                    let mut life = open_with(&subset);
                    for (i, &req) in order.iter().enumerate() {
                        if i == k && !failing {
                            life.abort(1, 7, &mut rec);
                            life.settle(1, 7, &mut rec);
                        }
                        let outcome = if i >= k { Outcome::Fail } else { Outcome::Ok };
                        assert_eq!(rec.closes, 0, "closed with {req:?} still in flight");
                        complete(&mut life, &mut rec, req, false, outcome);
                    }
                    if k == order.len() {
                        life.abort(1, 7, &mut rec);
                        life.settle(1, 7, &mut rec);
                    }
                    assert_eq!(rec.closes, 1, "order {order:?} abort at {k} ({failing})");
                    assert!(!life.busy());
                    // Each request was cancelled at most once.
                    for r in &subset {
                        assert!(rec.cancels.iter().filter(|c| *c == r).count() <= 1);
                    }
                    cases += 1;
                }
            }
        }
    }
    assert!(cases > 1000, "{cases}");
}

#[test]
fn phases_only_move_forward() {
    let mut life = Life::FREE;
    life.start(Phase::Connecting);
    assert!(!life.advance(Phase::Open), "connecting skips the handshake");
    assert!(life.advance(Phase::Handshake));
    assert!(life.advance(Phase::Open));
    assert!(!life.advance(Phase::Handshake));
    assert!(life.advance(Phase::Closing));
    assert!(!life.is_live());
    assert!(life.receiving());
    assert!(life.advance(Phase::HalfClosed));
    let mut rec = Recorder::default();
    life.abort(0, 0, &mut rec);
    assert!(!life.advance(Phase::Closing), "no way back from a teardown");
    assert!(!life.receiving());
}

#[test]
fn readiness_during_a_receive_asks_for_another() {
    let mut life = open_with(&[]);
    assert!(life.want_recv());
    life.submitted(Req::Recv);
    assert!(!life.want_recv(), "one receive at a time");
    life.completed(Req::Recv, false);
    assert!(life.recv_again(false, false), "readiness arrived meanwhile");
    life.submitted(Req::Recv);
    life.completed(Req::Recv, false);
    assert!(!life.recv_again(false, false));
    assert!(life.recv_again(true, false), "the socket has more");
}

#[test]
fn starving_marks_once_and_an_aborted_connection_is_not_retried() {
    let mut life = open_with(&[]);
    assert!(life.starve());
    assert!(!life.starve());
    assert!(life.unstarve());
    assert!(life.starve());
    let mut rec = Recorder::default();
    life.abort(0, 0, &mut rec);
    assert!(!life.unstarve());
    assert!(!life.want_recv());
}

#[test]
fn the_timer_mark_survives_teardown_until_release() {
    let mut life = open_with(&[Req::Poll]);
    life.set_timer(true);
    let mut rec = Recorder::default();
    life.abort(0, 0, &mut rec);
    assert!(life.has_timer(), "the wheel entry is still filed");
    life.completed(Req::Poll, false);
    life.settle(0, 0, &mut rec);
    life.released();
    assert!(!life.has_timer());
}
