"""HTTP side of the gateway, with raw requests: health check, routing and the
opening-handshake refusals of RFC 6455 section 4.2."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from rawws import (TEXT, frame, http_exchange, new_key, plain_request, read_frame,
                   upgrade_request, ws_connect)


def target(ws_url):
    parts = urlsplit(ws_url)
    return parts.path or "/", parts.netloc


def test_healthz_200_ok(http_url):
    status, _, body = http_exchange(http_url, plain_request(
        "GET", "/healthz", urlsplit(http_url).netloc))
    assert (status, body) == (200, b"ok\n")


@pytest.mark.parametrize("upgrade", [False, True])
def test_unknown_path_404(ws_url, upgrade):
    _, host = target(ws_url)
    req = (upgrade_request("/no-such-path", host, new_key()) if upgrade
           else plain_request("GET", "/no-such-path", host))
    assert http_exchange(ws_url, req)[0] == 404


def test_plain_get_on_echo_path_426(ws_url):
    path, host = target(ws_url)
    status, headers, _ = http_exchange(ws_url, plain_request("GET", path, host))
    assert status == 426
    assert headers.get("sec-websocket-version") == "13"


def test_unsupported_version_426(ws_url):
    path, host = target(ws_url)
    status, headers, _ = http_exchange(ws_url, upgrade_request(path, host, new_key(),
                                                               version="8"))
    assert status == 426
    assert headers.get("sec-websocket-version") == "13"


def test_post_405(ws_url):
    path, host = target(ws_url)
    req = upgrade_request(path, host, new_key(), method="POST",
                          extra="Content-Length: 0\r\n")
    assert http_exchange(ws_url, req)[0] == 405


@pytest.mark.parametrize("key", [None, "not base64!", "c2hvcnQ="])  # missing, junk, 5 bytes
def test_bad_key_400(ws_url, key):
    path, host = target(ws_url)
    assert http_exchange(ws_url, upgrade_request(path, host, key))[0] == 400


@pytest.mark.parametrize("extra", [
    "X-Big: " + "b" * 9000 + "\r\n",                                 # one long line
    "".join(f"X-Fill-{i}: {'f' * 200}\r\n" for i in range(50)),     # 50 short lines, ~10.6 KB
])
def test_headers_over_8kib_refused(ws_url, extra):
    path, host = target(ws_url)
    status = http_exchange(ws_url, upgrade_request(path, host, new_key(), extra=extra))[0]
    assert status in (400, 431), status


def test_permessage_deflate_declined(ws_url):
    sock, headers = ws_connect(ws_url, extra=(
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"))
    with sock:
        assert "sec-websocket-extensions" not in headers, headers
        sock.sendall(frame(TEXT, b"plain"))
        assert read_frame(sock) == (True, 0, TEXT, b"plain")  # RSV1 clear: not compressed
