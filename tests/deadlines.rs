//! Deadlines over real sockets: a deadline fires once, so an idle close is a clean closing
//! handshake (close frame, half-close, the peer's EOF), never a reset.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use common::{Gateway, RawClient};

/// Issue 9, defect 4. With the handshake timeout twice the idle timeout, the handshake deadline's
/// wheel entry and the earlier idle entry filed at the upgrade come due in the same bucket and
/// keep being re-filed together while the client is active. When it goes quiet both came due at
/// once: the first closed with 1001, the second aborted the closing connection, and the client got
/// a reset instead of a clean close. Now the deadline fires once: close frame, then the server's
/// half-close, and the server waits for our EOF.
#[test]
fn idle_close_is_a_clean_handshake_not_a_reset() {
    let gw = Gateway::start(&[
        "--echo-path",
        "/echo",
        "--workers",
        "1",
        "--idle-timeout-ms",
        "2000",
        "--handshake-timeout-ms",
        "4000",
        "--close-timeout-ms",
        "5000",
    ]);
    let mut c = RawClient::connect(gw.addr, "/echo");
    // Active past the handshake deadline (4 s), so both entries are re-filed at least once.
    for _ in 0..17 {
        std::thread::sleep(Duration::from_millis(300));
        c.send_frame(true, 9, b"k");
        assert_eq!(c.read_frame().expect("pong"), (true, 10, b"k".to_vec()));
    }
    // Quiet: the idle deadline passes.
    assert_eq!(c.expect_close(), Some(1001));
    // The server half-closed: EOF, not a reset.
    assert!(c.read_frame().is_none());
    // Our close reply reaches a socket the server still holds (draining until our EOF): the
    // write succeeds and nothing comes back. An aborted connection answers it with a reset.
    c.send_frame(true, 8, &1001u16.to_be_bytes());
    std::thread::sleep(Duration::from_millis(300));
    let second = c.stream.write(&[0x88, 0x80, 0, 0, 0, 0]);
    assert!(
        second.is_ok(),
        "the server reset the connection: {second:?}"
    );
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    match c.stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{rest:?}"),
        Err(e) => {
            assert_ne!(e.kind(), ErrorKind::ConnectionReset, "reset after our EOF");
            panic!("read after our EOF: {e}");
        }
    }
}
