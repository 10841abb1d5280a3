#!/usr/bin/env python3
"""Stand-in for `ringgate serve`, built on the `websockets` library.

It exists to check the test harness itself: every test in tests/python and the
Autobahn run must pass against it, so a failure against ringgate points at
ringgate, not at the harness. It accepts the same command line as
`ringgate serve` (unknown-to-it limits are accepted and ignored) so that
scripts/test.sh can run it through `RINGGATE_BIN=tests/python/standin_server.py`.

Contract mirrored from ringgate:
  GET /healthz                      -> 200 "ok\\n"
  WebSocket upgrade on --echo-path  -> echo every data message, same opcode
  other path                        -> 404
  plain GET on the echo path        -> 426 + Sec-WebSocket-Version: 13
  Sec-WebSocket-Version other than 13 -> 426 + Sec-WebSocket-Version: 13
  non-GET                           -> 405
  bad or missing key                -> 400 (websockets' own check)
  request headers over 8 KiB        -> 431
  permessage-deflate offers         -> declined
Protocol violations are answered by websockets itself with the RFC close code
(1002 / 1007 / 1009) followed by the server closing TCP.

Not mirrored: --workers, --idle-timeout-ms, --config (accepted
and ignored; websockets has no equivalent knob).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import websockets.asyncio.messages
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol

_recv_frame = Protocol.recv_frame


def _recv_frame_close_mid_message(self, frame):
    # websockets 17 fails a close that arrives inside a fragmented message with
    # 1002 ("incomplete fragmented message"); RFC 6455 5.4 allows control frames
    # there, and Autobahn 7.1.5 expects a normal 1000 close. Drop the partial
    # message first so the stand-in closes like a conforming server.
    if frame.opcode is Opcode.CLOSE:
        self.current_size = None
    return _recv_frame(self, frame)


Protocol.recv_frame = _recv_frame_close_mid_message

# Same default as ringgate's max_message_bytes (1 MiB).
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
# Total request-head budget; ringgate answers 431 past it.
MAX_HEADER_BYTES = 8 * 1024


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="standin_server.py")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--listen", required=True, help="HOST:PORT")
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--echo-path", default="/echo")
    s.add_argument("--max-frame-bytes", type=int, default=None)
    s.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    s.add_argument("--max-fragments", type=int, default=None)
    s.add_argument("--handshake-timeout-ms", type=int, default=10_000)
    s.add_argument("--idle-timeout-ms", type=int, default=None)
    s.add_argument("--log-level", default="warn")
    s.add_argument("--config", default=None)
    return parser.parse_args(argv)


def make_process_request(echo_path: str):
    def process_request(conn: ServerConnection, req: Request) -> Response | None:
        path = req.path.split("?", 1)[0]
        head_bytes = sum(len(k) + len(v) + 4 for k, v in req.headers.raw_items())
        if head_bytes > MAX_HEADER_BYTES:
            return conn.respond(431, "request headers too large\n")
        if path == "/healthz" and req.method == "GET":
            return conn.respond(200, "ok\n")
        if path != echo_path:
            return conn.respond(404, "not found\n")
        if req.method != "GET":
            resp = conn.respond(405, "method not allowed\n")
            resp.headers["Allow"] = "GET"
            return resp
        upgrade = req.headers.get("Upgrade", "").lower()
        version = req.headers.get("Sec-WebSocket-Version")
        if upgrade != "websocket" or version != "13":
            resp = conn.respond(426, "upgrade required\n")
            resp.headers["Upgrade"] = "websocket"
            resp.headers["Sec-WebSocket-Version"] = "13"
            return resp
        return None  # let websockets validate the key and complete the handshake

    return process_request


async def echo(conn: ServerConnection) -> None:
    # Iteration ends on a close from either side; websockets answers pings and
    # fails the connection with the right code on protocol errors.
    try:
        async for message in conn:
            await conn.send(message)
    except ConnectionClosed:
        pass  # the close code was already sent; nothing to log


async def main(argv: list[str]) -> None:
    args = parse_args(argv)
    level = {"trace": "DEBUG", "debug": "DEBUG", "info": "INFO", "warn": "WARNING",
             "error": "ERROR"}.get(args.log_level.lower(), "WARNING")
    logging.basicConfig(level=level, format="standin %(levelname)s %(message)s")
    if args.max_fragments is not None:
        websockets.asyncio.messages.MAX_FRAGMENTS = args.max_fragments
    host, _, port = args.listen.rpartition(":")
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        echo,
        host,
        int(port),
        process_request=make_process_request(args.echo_path),
        compression=None,  # decline permessage-deflate, as ringgate does
        max_size=(args.max_message_bytes, args.max_frame_bytes),
        ping_interval=None,  # no unsolicited pings: tests read exact frames
        open_timeout=args.handshake_timeout_ms / 1000,
        close_timeout=5,
        max_queue=64,
    ):
        await stop


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1:]))
    except KeyboardInterrupt:
        pass
