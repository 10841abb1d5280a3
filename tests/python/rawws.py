"""Raw-socket WebSocket and HTTP helpers for exact server-behaviour tests.

Client libraries hide what a server put on the wire (and refuse to send bad
frames), so these helpers build masked frames by hand and read the server's
frames byte for byte. They assert only what RFC 6455 requires of every server
frame (unmasked); tests assert the rest.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
from urllib.parse import urlsplit

# Every read is bounded: a test must fail, not hang, when the server is silent.
IO_TIMEOUT_S = 10.0
# How long a server gets to close TCP after its close frame.
CLOSE_TCP_TIMEOUT_S = 5.0
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def open_tcp(url: str) -> socket.socket:
    sock = socket.create_connection(host_port(url), timeout=IO_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_http_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response: (status, headers, body).

    Header names are lower-cased; a repeated header keeps its last value. For a
    101 the "body" is whatever frame bytes followed the head. Without
    Content-Length the body runs to EOF (requests here say Connection: close).
    """
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before response head; got {buf!r}")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if status == 101:
        return status, headers, body
    length = int(headers["content-length"]) if "content-length" in headers else None
    while length is None or len(body) < length:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        body += chunk
    return status, headers, body


def http_exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes, return (status, headers, body)."""
    with open_tcp(url) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # server may answer and close before reading everything
        return read_http_response(sock)


def plain_request(method: str, path: str, host: str, extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"{extra}\r\n").encode()


def upgrade_request(path: str, host: str, key: str | None = None,
                    version: str = "13", extra: str = "", method: str = "GET") -> bytes:
    key_line = f"Sec-WebSocket-Key: {key}\r\n" if key is not None else ""
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\n{key_line}Sec-WebSocket-Version: {version}\r\n"
            f"{extra}\r\n").encode()


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def ws_connect(url: str, extra: str = "") -> tuple[socket.socket, dict[str, str]]:
    """Open a WebSocket with a raw socket; return it and the 101's headers."""
    parts = urlsplit(url)
    key = new_key()
    sock = open_tcp(url)
    sock.sendall(upgrade_request(parts.path or "/", parts.netloc, key, extra=extra))
    status, headers, leftover = read_http_response(sock)
    assert status == 101, f"expected 101, got {status} {headers}"
    assert headers.get("sec-websocket-accept") == accept_for(key)
    assert not leftover, f"server sent frames before any request: {leftover!r}"
    return sock, headers


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0,
          mask: bool = True, length: int | None = None) -> bytes:
    """Encode one client frame; `length` overrides the header's length field."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + apply_mask(payload, key)


def apply_mask(payload: bytes, key: bytes) -> bytes:
    # XOR as one big integer: fast enough for the 1 MiB payloads tests send.
    keystream = (key * (len(payload) // 4 + 1))[: len(payload)]
    x = int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")
    return x.to_bytes(len(payload), "big")


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_frame(sock: socket.socket) -> tuple[bool, int, int, bytes]:
    """Read one server frame: (fin, rsv, opcode, payload)."""
    b0, b1 = recv_exact(sock, 2)
    assert not b1 & 0x80, "server frame is masked (RFC 6455 5.1 forbids it)"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", recv_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", recv_exact(sock, 8))[0]
    return bool(b0 & 0x80), (b0 >> 4) & 0x7, b0 & 0x0F, recv_exact(sock, n)


def read_message(sock: socket.socket) -> tuple[int, bytes]:
    """Read data frames until FIN; control frames in between are an error here."""
    fin, rsv, opcode, data = read_frame(sock)
    assert rsv == 0 and opcode in (TEXT, BINARY), (fin, rsv, opcode, data[:64])
    while not fin:
        fin, rsv, op, more = read_frame(sock)
        assert rsv == 0 and op == CONT, (fin, rsv, op, more[:64])
        data += more
    return opcode, data


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send, tolerating a server that already failed the connection."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def expect_close(sock: socket.socket, code: int) -> None:
    """Assert the next frame is a close with `code`, then that TCP closes.

    No close reply is sent: a server failing the connection (RFC 6455 7.1.7)
    must close TCP itself, and a server closing after a client's close must
    close TCP first (7.1.1), so EOF is expected either way.
    """
    fin, rsv, opcode, payload = read_frame(sock)
    assert (fin, rsv, opcode) == (True, 0, CLOSE), (fin, rsv, opcode, payload[:64])
    got = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
    assert got == code, f"close code {got}, expected {code} (reason {payload[2:]!r})"
    payload[2:].decode("utf-8")  # a close reason must itself be valid UTF-8
    expect_tcp_closed(sock)


def expect_tcp_closed(sock: socket.socket) -> None:
    sock.settimeout(CLOSE_TCP_TIMEOUT_S)
    try:
        extra = sock.recv(65536)
    except ConnectionResetError:
        return  # closed with our unread bytes pending: still closed by the server
    except socket.timeout:
        raise AssertionError("server did not close TCP after its close frame") from None
    assert extra == b"", f"data after the close frame: {extra[:64]!r}"
