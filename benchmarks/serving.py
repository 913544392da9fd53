"""Start a server on loopback for a benchmark, wait until it is ready, stop it afterwards."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(cmd: list[str], port: int, env: dict[str, str], timeout: float = 300) -> Iterator[str]:
    """Start a server, wait for /readyz, stop it afterwards; its log's ERROR lines go to stderr."""
    with started(cmd, port, env, timeout) as (base, _process):
        yield base


@contextlib.contextmanager
def started(
    cmd: list[str], port: int, env: dict[str, str], timeout: float = 300
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`running`, also yielding the server's process (to watch its workers)."""
    base = f"http://{HOST}:{port}"
    with tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited: {Path(log.name).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout}s: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.2)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        text = Path(log.name).read_text(errors="replace")
        problems = [line for line in text.splitlines() if "ERROR" in line or "Error:" in line]
        if problems:
            print(f"{len(problems)} error lines in the server log, first ones:", *problems[:10], sep="\n  ",
                  file=sys.stderr)
        Path(log.name).unlink(missing_ok=True)


def workers(server: psutil.Process) -> list[psutil.Process]:
    """The live worker processes of a `related serve --workers N` (not multiprocessing's resource tracker)."""
    found = []
    for child in server.children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # gone meanwhile
            continue
    return found


def all_ready(base: str, server: psutil.Process, count: int) -> bool:
    """`count` workers run and each serves an index (/metrics' ready gauge is the minimum over workers;
    /readyz answers from whichever worker accepts the connection)."""
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return False
    return len(workers(server)) == count and "related_index_ready 1.0" in text


def hard_linked_copy(data: Path, into: Path, prefix: str) -> Path:
    """A new data dir whose current version is the given one's, by hard links: updates leave the original alone."""
    import os
    import shutil

    version = (data / "current").resolve()
    copy = Path(tempfile.mkdtemp(prefix=prefix, dir=into))
    (copy / "versions").mkdir()
    shutil.copytree(version, copy / "versions" / version.name, copy_function=os.link)
    os.symlink(f"versions/{version.name}", copy / "current")
    return copy
