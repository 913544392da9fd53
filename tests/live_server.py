"""`related serve` as a real process on a free loopback port, for tests that need the real HTTP server
(uvicorn's protocol, limits, timeouts) or a client in another process (schemathesis)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_server(data_dir: Path, log: Path, **settings: str) -> Iterator[str]:
    """Base URL of `related serve` over data_dir, once /readyz says ready; RELATED_* settings as keywords."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELATED_")}
    env |= {f"RELATED_{name.upper()}": value for name, value in settings.items()}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    port = free_port()
    command = [sys.executable, "-c", "from recommender.cli import main; main()", "serve", "--data-dir", str(data_dir),
               "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # a fresh clone compiles the numba kernels on first load
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(f"server not ready; log:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield base
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (uvicorn and its workers), SIGKILL after 15 s."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
