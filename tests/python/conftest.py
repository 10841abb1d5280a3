"""Where the server under test is: env RINGGATE_URL (ws://HOST:PORT/echo) and
RINGGATE_HTTP (http://HOST:PORT; derived from RINGGATE_URL when unset).

There is no default on purpose: a run must never silently test something else.
scripts/test.sh starts the server and sets both.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest


@pytest.fixture(scope="session")
def ws_url() -> str:
    url = os.environ.get("RINGGATE_URL")
    if not url:
        pytest.fail("set RINGGATE_URL=ws://127.0.0.1:PORT/echo (scripts/test.sh does)")
    return url


@pytest.fixture(scope="session")
def http_url(ws_url: str) -> str:
    url = os.environ.get("RINGGATE_HTTP")
    if url:
        return url.rstrip("/")
    return f"http://{urlsplit(ws_url).netloc}"
