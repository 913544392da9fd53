"""Pages in a real headless Chromium: the API and a static site on loopback, and the browser.

Used by the widget tests and by tools/sidebar_screenshot.py. The browser is Debian's
`chromium` (/usr/bin/chromium) driven by Playwright, which downloads no browser of its own.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
CHROMIUM_NAMES = ("chromium", "chromium-browser")


class BrowserUnavailable(RuntimeError):
    """Chromium is missing or cannot start here; the message says which and how to get it."""


def bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    return sock


def base_url(sock: socket.socket) -> str:
    return f"http://{HOST}:{sock.getsockname()[1]}"


@contextlib.contextmanager
def serving_api(app: Any, *, wait_for: str = "/readyz", timeout: float = 120.0) -> Iterator[str]:
    """Run an ASGI app under uvicorn in a thread on a free loopback port until `wait_for` answers 200
    (/readyz: an index is loaded; /healthz: the server is up); yields its base URL."""
    import uvicorn

    sock = bound_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="api", daemon=True)
    thread.start()
    base = base_url(sock)
    try:
        deadline = time.monotonic() + timeout  # the first load in a fresh clone compiles the numba kernels
        while not answers_ok(base + wait_for):
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{base}{wait_for} did not answer 200 in {timeout:.0f} s")
            time.sleep(0.1)
        yield base
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        pass


@contextlib.contextmanager
def serving_directory(directory: Path) -> Iterator[str]:
    """A static site (another origin than the API: another port) on loopback; yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    with http.server.ThreadingHTTPServer((HOST, 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, name="site", daemon=True)
        thread.start()
        try:
            yield f"http://{HOST}:{httpd.server_address[1]}"
        finally:
            httpd.shutdown()
            thread.join(10)


def chromium_path() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserUnavailable("Debian's chromium is not installed (`apt-get install -y chromium`; .ci/run does it)")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Playwright Browser on Debian's Chromium; BrowserUnavailable when it cannot start."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise BrowserUnavailable(f"playwright is not installed ({err}): pip install -e '.[test]'") from None
    executable = chromium_path()
    try:
        playwright = sync_playwright().start()
    except Exception as err:  # its Node.js driver, shipped in the wheel, did not start
        raise BrowserUnavailable(f"Playwright's driver cannot start: {err}") from None
    try:
        try:
            browser = playwright.chromium.launch(executable_path=executable, headless=True, timeout=60_000)
        except PlaywrightError as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BrowserUnavailable(f"{executable} cannot start: {first_line}") from None
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()
