#!/usr/bin/env python3
"""Writes the checked-in seed corpora under fuzz/corpus/<target>/: a few real frames,
requests and messages per target, in each target's input layout (see the target's docs).
Deterministic; re-run after changing a layout. Frames are built here from RFC 6455, not
with ringgate's encoders, so a seed does not inherit an encoder bug."""

import os
import random
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def frame(opcode, payload, fin=True, mask=None, rsv=0, force_len=None):
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    kind = force_len or (7 if n < 126 else 16 if n < 65536 else 64)
    if kind == 7:
        head = bytes([b0, mask_bit | n])
    elif kind == 16:
        head = bytes([b0, mask_bit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mask_bit | 127]) + struct.pack(">Q", n)
    if mask is None:
        return head + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + bytes(mask) + body


def cf(opcode, payload, fin=True, **kw):
    """A client frame (masked)."""
    return frame(opcode, payload, fin, mask=[0x37, 0xFA, 0x21, 0x3D], **kw)


def ws_input(flags, cuts, stream):
    return bytes([flags, len(cuts)]) + b"".join(struct.pack("<H", c) for c in cuts) + stream


SERVER, CLIENT = 0, 1
TINY, ONE_FRAGMENT = 1 << 1, 2 << 1
FRESH = 8


def ws_frame_seeds():
    close_bye = struct.pack(">H", 1000) + b"bye"
    join = b'["1","1","rooms:lobby","phx_join",{}]'
    return {
        "text_hello": ws_input(SERVER, [], cf(1, b"Hello")),
        "fragmented_with_ping": ws_input(
            SERVER | FRESH, [1, 9],
            cf(1, b"Hel", fin=False) + cf(9, b"p") + cf(0, b"lo")),
        "close_1000": ws_input(SERVER, [3], cf(8, close_bye)),
        "client_side_mix": ws_input(
            CLIENT, [2, 40],
            frame(1, b"Hello") + frame(9, b"") + frame(2, bytes(range(256)))),
        "over_tiny_limit": ws_input(SERVER | TINY, [], cf(2, b"x" * 17)),
        "phoenix_join": ws_input(SERVER, [5], cf(1, join)),
        "non_minimal_length": ws_input(CLIENT, [], frame(2, b"abc", force_len=64)),
        "unmasked_from_client": ws_input(SERVER, [], frame(1, b"Hello")),
        "utf8_split": ws_input(
            SERVER | ONE_FRAGMENT, [7, 8],
            cf(1, "é€".encode()[:3], fin=False) + cf(0, "é€".encode()[3:])),
        "reserved_bits_and_opcode": ws_input(SERVER, [], cf(3, b"") + cf(1, b"a", rsv=4)),
    }


UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
)
PHOENIX = (
    b"GET /socket/websocket?vsn=2.0.0&token=a%20b+c HTTP/1.1\r\nHost: localhost:4000\r\n"
    b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
    b"Sec-WebSocket-Protocol: phoenix, base64url.bearer.phx.dG9rZW4\r\n\r\n"
)


def ws_handshake_seeds():
    default, tiny, roomy = b"\x00", b"\x01", b"\x02"
    return {
        "rfc_upgrade": default + UPGRADE,
        "phoenix_v2": default + PHOENIX,
        "healthz": default + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        "http_1_0": default + UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0"),
        "post_upgrade": default + UPGRADE.replace(b"GET", b"POST"),
        "bad_version": roomy + PHOENIX.replace(b"Version: 13", b"Version: 8"),
        "pipelined_frame": default + PHOENIX + cf(1, b'[null,"1","phoenix","heartbeat",{}]'),
        "too_large_for_tiny": tiny + UPGRADE,
        "lf_only": default + UPGRADE.replace(b"\r\n", b"\n"),
        "garbage": default + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    }


def phoenix_v1_seeds():
    return {
        "join": b'{"topic":"rooms:lobby","event":"phx_join","payload":{},"ref":"1"}',
        "join_with_join_ref": b'{"topic":"rooms:lobby","event":"phx_join","payload":{"token":"t"},"ref":"2","join_ref":"2"}',
        "heartbeat": b'{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"3"}',
        "push_escapes": '{"topic":"rooms:\\u00e9\\"q\\"","event":"new_msg","payload":{"body":"hi\\n\\u2028é"},"ref":null}'.encode(),
        "spaced": b' { "ref" : "4" , "payload" : [1, 2.5e3, true, null] , "event" : "e" , "topic" : "t" } ',
        "numeric_ref": b'{"topic":"t","event":"e","payload":{},"ref":5}',
    }


def phoenix_v2_seeds():
    return {
        "join": b'["1","1","rooms:lobby","phx_join",{}]',
        "heartbeat": b'[null,"2","phoenix","heartbeat",{}]',
        "push": b'["1","3","rooms:lobby","new_msg",{"body":"hello \\"world\\"","n":[1,2,{"x":null}]}]',
        "leave": b'["1","4","rooms:lobby","phx_leave",{}]',
        "extra_elements": b'["1","5","rooms:a","e","x",6,7]',
        "escaped_unicode": '[null,null,"rooms:\\ud83d\\ude00\\u0001","ev\\t",{"a":"ü"}]'.encode(),
        "too_few": b'["1","1","rooms:lobby"]',
    }


def binary_push(join_ref, ref, topic, event, data, kind=0):
    fields = [join_ref, ref, topic, event]
    return bytes([kind] + [len(f) for f in fields]) + b"".join(fields) + data


def phoenix_binary_seeds():
    return {
        "push": binary_push(b"1", b"2", b"rooms:lobby", b"file", b"\x00\x01\x02\xff"),
        "absent_refs": binary_push(b"", b"", b"rooms:lobby", b"blob", b""),
        "utf8_topic": binary_push(b"12", b"13", "rooms:é".encode(), b"e", b"data"),
        "truncated": binary_push(b"1", b"2", b"rooms:lobby", b"file", b"")[:9],
        "server_kind": binary_push(b"1", b"2", b"t", b"ok", b"x", kind=1),
    }


def topics_seeds():
    # The topics target reads a structured `Input` through `arbitrary`, which accepts any
    # bytes; fixed pseudo-random seeds give the fuzzer op sequences of a few lengths to start.
    rng = random.Random(6)
    return {f"random_{n}": bytes(rng.randrange(256) for _ in range(n)) for n in (32, 128, 512, 1024)}


def main():
    targets = {
        "ws_frame": ws_frame_seeds(),
        "ws_handshake": ws_handshake_seeds(),
        "phoenix_v1": phoenix_v1_seeds(),
        "phoenix_v2": phoenix_v2_seeds(),
        "phoenix_binary": phoenix_binary_seeds(),
        "topics": topics_seeds(),
    }
    for target, seeds in targets.items():
        d = os.path.join(ROOT, target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
