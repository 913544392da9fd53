"""Every documented error case of every subcommand: one stderr line `related CMD: status=... error="..."`,
nothing on stdout, no traceback, the exit code the README documents.

The table is the contract: a new subcommand adds its rows. In-process (click's runner) for speed,
plus a few through the installed `related` script, where logging and uvicorn write to the real stderr.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from index.artifacts import build_lock, list_versions
from recommender.cli import EXIT_FAILED, EXIT_INVALID, EXIT_LOCKED, main
from tests.corpora import SMALL, newsroom, write_jsonl
from tests.test_cli import assert_readable_failure, write_toml

RELATED = str(Path(sys.executable).with_name("related"))
SERVE_VARIABLES = ("RELATED_DATA_DIR", "RELATED_HOST", "RELATED_PORT", "RELATED_WORKERS")


@dataclass(frozen=True)
class Paths:
    root: Path
    source: Path
    config: str
    data: Path  # a built index with two versions
    empty: Path  # a data dir with nothing built


@contextmanager
def locked(data: Path) -> Iterator[None]:
    with build_lock(data):  # flock is per open file: the command's own attempt is refused
        yield


@contextmanager
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@dataclass(frozen=True)
class Case:
    name: str
    args: Callable[[Paths], list]
    message: str  # part of the one line
    status: str = "failed"
    exit_code: int = EXIT_FAILED
    env: dict[str, str] = field(default_factory=dict)
    during: Callable[[Paths], object] | None = None  # a context held while the command runs


def bad_config(p: Paths) -> str:
    return write_toml(p.root / "bad.toml", {"text": {"title_weight": 0}})


def rejects_only(p: Paths) -> str:
    path = p.root / "garbage.jsonl"
    path.write_text('{"id": "x"}\nnot json\n', encoding="utf-8")
    return str(path)


CASES = [
    # build
    Case("build: missing source", lambda p: ["build", "--source", p.root / "missing.jsonl", "--data-dir", p.empty],
         "source file not found"),
    Case("build: bad config", lambda p: ["build", "--source", p.source, "--data-dir", p.empty, "--config", bad_config(p)],
         "title_weight"),
    Case("build: every record rejected", lambda p: ["build", "--source", rejects_only(p), "--data-dir", p.empty],
         "rejected"),
    Case("build: data dir under /proc", lambda p: ["build", "--source", p.source, "--data-dir", "/proc/nope"],
         "/proc/nope"),
    Case("build: data dir under a file", lambda p: ["build", "--source", p.source, "--data-dir", "/dev/null/x"],
         "/dev/null/x: Not a directory"),
    Case("build: locked", lambda p: ["build", "--source", p.source, "--data-dir", p.data, "--force"],
         "holds the lock", "locked", EXIT_LOCKED, during=lambda p: locked(p.data)),
    Case("build: unknown option", lambda p: ["build", "--sauce", p.source], "No such option", "invalid", EXIT_INVALID),
    Case("build: no source", lambda p: ["build", "--data-dir", p.data], "Missing option '--source'", "invalid",
         EXIT_INVALID),
    # show (`related ID`)
    Case("show: unknown id", lambda p: ["no-such-article", "--data-dir", p.data], "'no-such-article' is not in index"),
    Case("show: nothing built", lambda p: ["budget-0", "--data-dir", p.empty], "run `related build` first"),
    Case("show: limit out of range", lambda p: ["budget-0", "--data-dir", p.data, "--limit", "0"],
         "Invalid value for '--limit'", "invalid", EXIT_INVALID),
    # info
    Case("info: nothing built", lambda p: ["info", "--data-dir", p.empty], "run `related build` first"),
    # serve
    Case("serve: port out of range", lambda p: ["serve", "--data-dir", p.data, "--port", "99999"],
         "--port='99999'", "invalid", EXIT_INVALID),
    Case("serve: no workers", lambda p: ["serve", "--data-dir", p.data, "--workers", "0"],
         "--workers='0'", "invalid", EXIT_INVALID),
    Case("serve: RELATED_WORKERS not a number", lambda p: ["serve", "--data-dir", p.data],
         "RELATED_WORKERS='abc'", "invalid", EXIT_INVALID, env={"RELATED_WORKERS": "abc"}),
    Case("serve: RELATED_CORS_ORIGINS malformed", lambda p: ["serve", "--data-dir", p.data],
         "RELATED_CORS_ORIGINS='[bad'", "invalid", EXIT_INVALID, env={"RELATED_CORS_ORIGINS": "[bad"}),
    Case("serve: RELATED_MAX_BODY_BYTES zero", lambda p: ["serve", "--data-dir", p.data],
         "RELATED_MAX_BODY_BYTES='0'", "invalid", EXIT_INVALID, env={"RELATED_MAX_BODY_BYTES": "0"}),
    Case("serve: port taken", lambda p: ["serve", "--data-dir", p.data, "--port", p.root.joinpath("port").read_text()],
         "Address already in use", during=lambda p: _hold_port(p)),
    # evaluate
    Case("evaluate: no labels", lambda p: ["evaluate", "--corpus", p.source, "--out", p.root / "r"],
         "give --labels or --qrels"),
    Case("evaluate: missing corpus", lambda p: ["evaluate", "--corpus", p.root / "missing.jsonl", "--labels", p.source,
                                                "--out", p.root / "r"], "not found"),
    Case("evaluate: unknown config", lambda p: ["evaluate", "--corpus", p.source, "--labels", p.source,
                                                "--config", "no-such-config", "--out", p.root / "r"], "no-such-config"),
    # update
    Case("update: missing file", lambda p: ["update", "--source", p.root / "missing.jsonl", "--data-dir", p.data],
         "update file not found"),
    Case("update: nothing built", lambda p: ["update", "--source", p.source, "--data-dir", p.empty],
         "run `related build`"),
    Case("update: every record rejected", lambda p: ["update", "--source", rejects_only(p), "--data-dir", p.data],
         "all rejected"),
    Case("update: locked", lambda p: ["update", "--source", p.source, "--data-dir", p.data], "holds the lock",
         "locked", EXIT_LOCKED, during=lambda p: locked(p.data)),
    Case("update: missing database", lambda p: ["update", "--source", f"sqlite:///{p.root / 'none.db'}",
                                                "--data-dir", p.data], "database file not found"),
    # sync
    Case("sync: nothing built", lambda p: ["sync", "--source", f"sqlite:///{p.root / 'cms.db'}", "--data-dir", p.empty],
         "run `related build`"),
    Case("sync: version not built from a database", lambda p: ["sync", "--source", f"sqlite:///{p.root / 'cms.db'}",
                                                               "--data-dir", p.data], "was not built from a database"),
    Case("sync: not a database URL", lambda p: ["sync", "--source", "nosuchdb://x", "--data-dir", p.data],
         "not a database URL"),
    Case("sync: locked", lambda p: ["sync", "--source", f"sqlite:///{p.root / 'cms.db'}", "--data-dir", p.data],
         "holds the lock", "locked", EXIT_LOCKED, during=lambda p: locked(p.data)),
    # rollback
    Case("rollback: locked", lambda p: ["rollback", "--data-dir", p.data], "holds the lock", "locked", EXIT_LOCKED,
         during=lambda p: locked(p.data)),
    Case("rollback: nothing built", lambda p: ["rollback", "--data-dir", p.empty], "nothing to roll back"),
    Case("rollback: unknown version", lambda p: ["rollback", "--data-dir", p.data, "20200101T000000000000Z-00000000"],
         "no committed version named"),
    Case("rollback: a path, not a version", lambda p: ["rollback", "--data-dir", p.data, "../../etc"],
         "no committed version named '../../etc'"),
    Case("rollback: nothing older", lambda p: ["rollback", "--data-dir", _oldest_only(p)],
         "no version older"),
]


@contextmanager
def _hold_port(p: Paths) -> Iterator[None]:
    with busy_port() as port:
        p.root.joinpath("port").write_text(str(port))
        yield


def _oldest_only(p: Paths) -> str:
    """A copy of the data dir whose current version is its only one."""
    target = p.root / "single"
    if not target.exists():
        shutil.copytree(p.data, target, symlinks=True)
        for version in list_versions(target)[1:]:
            shutil.rmtree(version)
        (target / "current").unlink()
        (target / "current").symlink_to(Path("versions") / list_versions(target)[0].name)
    return str(target)


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> Paths:
    root = tmp_path_factory.mktemp("cli-errors")
    source = write_jsonl(root / "corpus.jsonl", newsroom())
    config = write_toml(root / "small.toml", SMALL)
    data = root / "data"
    for extra in ([], ["--force"]):
        result = CliRunner().invoke(main, ["build", "--source", str(source), "--data-dir", str(data),
                                           "--config", config, *extra])
        assert result.exit_code == 0, result.output
    (root / "empty").mkdir()
    (root / "port").write_text("0")
    return Paths(root, source, config, data, root / "empty")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_error_case_is_one_status_line(case: Case, paths: Paths, monkeypatch) -> None:
    for name in SERVE_VARIABLES:  # `serve` exports its flags; restore the environment afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    with ExitStack() as stack:
        if case.during:
            stack.enter_context(case.during(paths))
        args = [str(a) for a in case.args(paths)]
        result = CliRunner().invoke(main, args, env=case.env)
    assert_readable_failure(result, case.message, status=case.status, exit_code=case.exit_code)
    command = args[0] if args[0] in main.commands else "show"
    assert result.stderr.startswith(f"related {command}: status={case.status} ")


def test_every_subcommand_has_error_cases() -> None:
    covered = {c.name.split(":")[0] for c in CASES}
    assert set(main.commands) <= covered, set(main.commands) - covered


@pytest.mark.parametrize(("env", "args", "message"), [
    ({}, ["build", "--source", "x.jsonl", "--data-dir", "/dev/null/x"], "source file not found"),
    ({}, ["build", "--source", "{corpus}", "--data-dir", "/proc/nope"], "/proc/nope"),
    ({"RELATED_WORKERS": "abc"}, ["serve", "--data-dir", "{data}"], "RELATED_WORKERS='abc'"),
])
def test_the_installed_command_prints_one_line(env, args, message, paths: Paths) -> None:
    """Through the real entry point: logging, uvicorn and the interpreter write to the real stderr."""
    args = [a.format(corpus=paths.source, data=paths.data) for a in args]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RELATED_")} | env
    result = subprocess.run([RELATED, *args], capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode in (EXIT_FAILED, EXIT_INVALID) and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr and message in lines[0], result.stderr
    assert lines[0].split(":")[0] in {"related build", "related serve"}
