"""Exact server reactions to hand-built frames (RFC 6455 sections 5 and 7).

Each violation must be answered with one close frame carrying the RFC code,
after which the server closes TCP (see rawws.expect_close).
"""

from __future__ import annotations

import pytest

from rawws import (BINARY, CLOSE, CONT, PING, PONG, TEXT, close_payload, expect_close,
                   frame, read_frame, read_message, send_quietly, ws_connect)

MIB = 1 << 20  # ringgate's default max_message_bytes


def violate(ws_url: str, data: bytes, code: int) -> None:
    sock, _ = ws_connect(ws_url)
    with sock:
        send_quietly(sock, data)
        expect_close(sock, code)


@pytest.mark.parametrize("name,data", [
    ("unmasked frame", frame(TEXT, b"hello", mask=False)),
    ("RSV1 without extension", frame(TEXT, b"hello", rsv=0b100)),
    ("RSV3 without extension", frame(BINARY, b"hello", rsv=0b001)),
    ("reserved data opcode 3", frame(0x3, b"")),
    ("reserved control opcode 0xB", frame(0xB, b"")),
    ("ping with 126-byte payload", frame(PING, b"p" * 126)),
    ("fragmented ping", frame(PING, b"p", fin=False)),
    ("continuation without a start", frame(CONT, b"orphan")),
    ("new data frame inside a fragmented message",
     frame(TEXT, b"a", fin=False) + frame(TEXT, b"b")),
    ("close with code 1005 on the wire", frame(CLOSE, close_payload(1005))),
    ("close with code 999", frame(CLOSE, close_payload(999))),
    ("close with 1-byte payload", frame(CLOSE, b"\x03")),
])
def test_protocol_error_1002(ws_url, name, data):
    violate(ws_url, data, 1002)


@pytest.mark.parametrize("name,data", [
    ("invalid byte 0xff", frame(TEXT, b"ok \xff")),
    ("UTF-16 surrogate", frame(TEXT, b"\xed\xa0\x80")),
    ("overlong encoding", frame(TEXT, b"\xc0\xaf")),
    ("invalid sequence split across two fragments",
     frame(TEXT, b"ab\xe2\x82", fin=False) + frame(CONT, b"\x28cd")),
    ("close reason not UTF-8", frame(CLOSE, close_payload(1000, b"bad \xff reason"))),
])
def test_invalid_utf8_1007(ws_url, name, data):
    violate(ws_url, data, 1007)


def test_text_over_1mib_1009(ws_url):
    violate(ws_url, frame(TEXT, b"a" * (MIB + 1)), 1009)


def test_fragmented_text_over_1mib_1009(ws_url):
    # every frame is small: only the message total crosses the limit
    chunk = b"a" * 65536
    n = MIB // len(chunk) + 1
    data = b"".join(frame(TEXT if i == 0 else CONT, chunk, fin=i == n - 1)
                    for i in range(n))
    violate(ws_url, data, 1009)


def test_valid_utf8_split_mid_codepoint_is_accepted(ws_url):
    sock, _ = ws_connect(ws_url)
    with sock:
        sock.sendall(frame(TEXT, b"ab\xe2\x82", fin=False) + frame(CONT, b"\xaccd"))
        assert read_message(sock) == (TEXT, "ab€cd".encode())


def test_ping_pong_exact(ws_url):
    payload = bytes(range(125))
    sock, _ = ws_connect(ws_url)
    with sock:
        sock.sendall(frame(PING, payload))
        assert read_frame(sock) == (True, 0, PONG, payload)


def test_ping_between_fragments_answered_in_place(ws_url):
    sock, _ = ws_connect(ws_url)
    with sock:
        sock.sendall(frame(TEXT, b"one ", fin=False) + frame(PING, b"mid")
                     + frame(CONT, b"two"))
        assert read_frame(sock) == (True, 0, PONG, b"mid")
        assert read_message(sock) == (TEXT, b"one two")


def test_client_close_1000_is_echoed_then_tcp_closed(ws_url):
    sock, _ = ws_connect(ws_url)
    with sock:
        sock.sendall(frame(BINARY, b"\x00\x01"))
        assert read_message(sock) == (BINARY, b"\x00\x01")
        sock.sendall(frame(CLOSE, close_payload(1000, b"bye")))
        expect_close(sock, 1000)
