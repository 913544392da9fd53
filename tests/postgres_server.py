"""A throwaway PostgreSQL cluster for the tests: initdb + pg_ctl into a temporary directory, on a
free loopback port, stopped and removed afterwards. `.ci/run` installs Debian's postgresql; the
fixture skips with the reason when no server can be started. PostgreSQL refuses to run as root,
so as root the cluster belongs to the `postgres` user (runuser)."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def server_binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else the newest of Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(debian[-1]).parent if debian else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh cluster's `postgres` database (user postgres, trust auth, loopback only)."""
    binaries = server_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server not installed (initdb not on PATH nor in /usr/lib/postgresql/*/bin; "
                    ".ci/run installs Debian's postgresql)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="related-pg-"))
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            import pwd

            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = None
        if runuser is None or owner is None:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("running as root without a `postgres` user (or runuser): PostgreSQL refuses to run as root")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = [runuser, "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    run = lambda *args: subprocess.run(as_user + list(args), capture_output=True, text=True, timeout=120)  # noqa: E731
    init = run(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
    started = init.returncode == 0 and run(
        str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off", "start",
    ).returncode == 0
    if not started:
        log = (root / "log").read_text(errors="replace")[-500:] if (root / "log").exists() else init.stderr[-500:]
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {log.strip()}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
