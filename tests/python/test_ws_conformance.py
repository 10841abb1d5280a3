"""Echo conformance through the strict `websockets` client.

The client itself rejects masked server frames, bad UTF-8, set RSV bits and
invalid close codes, so every successful exchange here also checks the
server's framing. Exact wire behaviour on bad input is in test_ws_raw.py.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

# Sizes around the 7-bit/16-bit/64-bit length encodings, plus one large message
# just under the server's default max_message_bytes (1 MiB = 1_048_576).
SIZES = [0, 1, 125, 126, 65535, 65536, 1_000_000]
STEP_TIMEOUT_S = 20


def client(url: str):
    return connect(url, compression=None, ping_interval=None, max_size=2**21,
                   open_timeout=STEP_TIMEOUT_S, close_timeout=5)


def text_of(size: int) -> str:
    """A str whose UTF-8 encoding is exactly `size` bytes, mostly 3-byte chars
    so that multi-byte sequences straddle any frame or buffer boundary."""
    s = "€" * (size // 3) + "a" * (size % 3)
    assert len(s.encode()) == size
    return s


PATTERN = bytes(i * 7 % 251 for i in range(251))  # all byte values but a few, no period of 2^k


def binary_of(size: int) -> bytes:
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.mark.parametrize("size", SIZES)
def test_echo_text(ws_url, size):
    async def go():
        async with client(ws_url) as ws:
            msg = text_of(size)
            await ws.send(msg)
            got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S)
            assert isinstance(got, str), "text must come back as text"
            assert got == msg
    run(go())


@pytest.mark.parametrize("size", SIZES)
def test_echo_binary(ws_url, size):
    async def go():
        async with client(ws_url) as ws:
            msg = binary_of(size)
            assert len(msg) == size
            await ws.send(msg)
            got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S)
            assert isinstance(got, bytes), "binary must come back as binary"
            assert got == msg
    run(go())


def test_fragmented_text_echoed_whole(ws_url):
    parts = ["frag-one ", "€€ split ", "", "end"]

    async def go():
        async with client(ws_url) as ws:
            await ws.send(parts)  # an iterable is sent as one fragmented message
            got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S)
            assert got == "".join(parts)
    run(go())


def test_fragmented_binary_echoed_whole(ws_url):
    parts = [b"\x00\x01", binary_of(70_000), b"", b"\xff"]

    async def go():
        async with client(ws_url) as ws:
            await ws.send(parts)
            got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S)
            assert got == b"".join(parts)
    run(go())


def test_pipelined_messages_echoed_in_order(ws_url):
    msgs = [text_of(i * 37 % 300) if i % 2 else binary_of(i * 53 % 70_000)
            for i in range(200)]

    async def go():
        async with client(ws_url) as ws:
            for m in msgs:
                await ws.send(m)
            for i, m in enumerate(msgs):
                got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S)
                assert got == m, f"message {i} differs"
    run(go())


def test_ping_gets_pong_with_same_payload(ws_url):
    async def go():
        async with client(ws_url) as ws:
            pong = await ws.ping(b"ping-\x00\xff-payload")
            # websockets resolves this only for a pong carrying the same bytes
            await asyncio.wait_for(pong, STEP_TIMEOUT_S)
    run(go())


def test_clean_close_1000(ws_url):
    async def go():
        async with client(ws_url) as ws:
            await ws.send("bye")
            assert await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S) == "bye"
            await ws.close(1000, "done")
            # close_rcvd is the server's own close frame; without it the
            # client gives up after its close_timeout and reports 1006.
            # That the server then closes TCP is test_ws_raw's
            # test_client_close_1000_is_echoed_then_tcp_closed.
            assert ws.protocol.close_rcvd is not None, "no close frame from the server"
            assert ws.protocol.close_rcvd.code == 1000, ws.protocol.close_rcvd
            assert ws.close_code == 1000, ws.close_code
    run(go())


def test_100_concurrent_clients(ws_url):
    async def one(i: int):
        async with client(ws_url) as ws:
            for j in range(5):
                msg = f"client {i} message {j} " + "x" * (i * 31 % 2000)
                await ws.send(msg)
                assert await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S) == msg

    async def go():
        await asyncio.gather(*(one(i) for i in range(100)))
    run(go())
