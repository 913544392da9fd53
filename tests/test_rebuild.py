"""Cron-safe `related build`: lock, idempotence, retention, crash safety, failures, rollback, quality gate."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from index.artifacts import build_lock, current_version, list_versions, verify_version
from recommender.pipeline.build import build
from recommender.cli import EXIT_LOCKED, main
from recommender.config import PipelineConfig
from recommender.errors import RelatedError
from recommender.pipeline.gate import EXIT_REFUSED, GateRefused, make_gate
from recommender.policy.ranking import RelatedQuery
from recommender.related import RelatedIndex
from tests.news_corpus import CONFIG, article, corpus, labels, scrambled, write_config, write_jsonl

RELATED = str(Path(sys.executable).with_name("related"))
REPO = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RELATED, *args], capture_output=True, text=True, env=env(), timeout=120)


def summary_fields(stderr: str, command: str = "build") -> dict[str, str]:
    line = [x for x in stderr.splitlines() if x.startswith(f"related {command}: status=")][-1]
    return dict(part.split("=", 1) for part in line.removeprefix(f"related {command}: ").split() if "=" in part)


@pytest.fixture()
def config() -> PipelineConfig:
    return PipelineConfig.from_dict(CONFIG)


def test_idempotent_build_makes_no_new_version(tmp_path: Path, config: PipelineConfig) -> None:
    source = write_jsonl(tmp_path / "c.jsonl", corpus())
    data = tmp_path / "data"
    first = build(source, data, config)
    again = build(source, data, config)
    assert again.unchanged and again.version == first.version
    assert list_versions(data) == [first.version]
    forced = build(source, data, config, force=True)
    assert forced.version != first.version and len(list_versions(data)) == 2
    assert current_version(data) == forced.version.resolve()


def test_keeps_last_n_versions(tmp_path: Path) -> None:
    config = PipelineConfig.from_dict(CONFIG | {"build": {"keep": 2}})
    data = tmp_path / "data"
    made = [build(write_jsonl(tmp_path / f"c{i}.jsonl", corpus(seed=i)), data, config).version for i in range(4)]
    assert list_versions(data) == made[-2:]


def test_cli_structured_summary(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "c.jsonl", corpus() + [{"id": "", "title": "x"}])
    data = tmp_path / "data"
    args = ["build", "--source", str(source), "--data-dir", str(data), "--config", str(write_config(tmp_path / "c.toml"))]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    fields = summary_fields(result.stderr)
    assert fields["status"] == "built" and fields["version"] == current_version(data).name
    assert fields["articles"] == "36" and fields["rejects"] == "1" and float(fields["seconds"]) >= 0
    again = CliRunner().invoke(main, args)
    assert summary_fields(again.stderr)["status"] == "unchanged"


def test_failed_build_keeps_previous_current(tmp_path: Path, config: PipelineConfig) -> None:
    data = tmp_path / "data"
    good = build(write_jsonl(tmp_path / "c.jsonl", corpus()), data, config).version
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": f"x{i}"} for i in range(5)])
    with pytest.raises(RelatedError):
        build(bad, data, config)
    assert current_version(data) == good.resolve() and list_versions(data) == [good]
    result = CliRunner().invoke(main, ["build", "--source", str(bad), "--data-dir", str(data)])
    assert result.exit_code == 1 and summary_fields(result.stderr)["status"] == "failed"
    assert current_version(data) == good.resolve()


HELD_BUILD = """
import sys, time
from pathlib import Path
import recommender.pipeline.build as b
read = b.read_source
def held(*args, **kwargs):  # inside the lock: wait until the test says go
    release = Path(sys.argv[1])
    deadline = time.time() + 60
    while not release.exists() and time.time() < deadline:
        time.sleep(0.05)
    return read(*args, **kwargs)
b.read_source = held
from recommender.cli import main
main(sys.argv[2:])
"""


def test_two_concurrent_builds_one_proceeds(tmp_path: Path) -> None:
    """The first build holds the lock (held inside it until released); the second exits 75 naming the lock."""
    source = write_jsonl(tmp_path / "c.jsonl", corpus())
    data = tmp_path / "data"
    args = ["build", "--source", str(source), "--data-dir", str(data), "--config", str(write_config(tmp_path / "c.toml"))]
    release = tmp_path / "release"
    first = subprocess.Popen([sys.executable, "-c", HELD_BUILD, str(release), *args], env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = data / "build.lock"
    deadline = time.time() + 60
    while time.time() < deadline and not (lock.exists() and lock.read_text().strip() == str(first.pid)):
        time.sleep(0.05)
    second = cli(*args)
    release.touch()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert second.returncode == EXIT_LOCKED and "lock" in second.stderr.lower(), second.stderr
    assert summary_fields(second.stderr)["status"] == "locked"
    assert len(list_versions(data)) == 1
    # Update and rollback take the same lock.
    with build_lock(data):  # flock conflicts between two open()s of one process too
        for command in (["update", "--source", str(source)], ["rollback"], args):
            result = CliRunner().invoke(main, [*command, "--data-dir", str(data)] if command is not args else args)
            assert result.exit_code == EXIT_LOCKED and "lock" in result.stderr, result.stderr


@pytest.mark.parametrize("command", ["build", "update"])
def test_sigkill_never_breaks_current(tmp_path: Path, config: PipelineConfig, command: str) -> None:
    data = tmp_path / "data"
    base = corpus(size=40)
    build(write_jsonl(tmp_path / "c.jsonl", base), data, config)
    if command == "build":
        source = write_jsonl(tmp_path / "big.jsonl", corpus(size=60, seed=3))
        args = ["build", "--source", str(source), "--data-dir", str(data), "--force",
                "--config", str(write_config(tmp_path / "c.toml"))]
    else:
        source = write_jsonl(tmp_path / "u.jsonl", [article("cup", 100 + i, seed=i) for i in range(200)]
                             + [{"id": f"flood-{i}", "deleted": True} for i in range(10)])
        args = ["update", "--source", str(source), "--data-dir", str(data)]
    for delay in (1.0, 2.5, 4.0):
        process = subprocess.Popen([RELATED, *args], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        version = current_version(data)
        assert version is not None and not version.name.startswith(".")
        verify_version(version)
        index = RelatedIndex.open(data)
        assert index.for_article("cup-0", RelatedQuery(limit=3, lang="any")).items
    # The next run cleans up after the killed ones and succeeds.
    assert cli(*args).returncode == 0
    assert not [p for p in (data / "versions").iterdir() if p.name.startswith(".")]


def test_gate_refuses_scrambled_corpus(tmp_path: Path, config: PipelineConfig) -> None:
    data = tmp_path / "data"
    records = corpus()
    good = build(write_jsonl(tmp_path / "good.jsonl", records), data, config).version
    gate = make_gate(config.build)
    bad_source = write_jsonl(tmp_path / "bad.jsonl", scrambled(records))
    with pytest.raises(GateRefused) as refused:
        build(bad_source, data, config, gate=gate)
    assert refused.value.result.mode == "lists" and "overlap" in refused.value.result.reason
    assert current_version(data) == good.resolve()
    assert refused.value.version in list_versions(data)  # kept on disk, not current
    # Re-running the same build finds the refused version by its hash: it is gated again, not published.
    with pytest.raises(GateRefused):
        build(bad_source, data, config, gate=gate)
    assert current_version(data) == good.resolve()
    # A sound new corpus (one more article) passes.
    passed = build(write_jsonl(tmp_path / "more.jsonl", records + [article("cup", 9)]), data, config, gate=gate)
    assert current_version(data) == passed.version.resolve()


def test_gate_with_labels_cli(tmp_path: Path) -> None:
    data = tmp_path / "data"
    records = corpus()
    toml = str(write_config(tmp_path / "c.toml"))
    label_file = write_jsonl(tmp_path / "labels.jsonl", labels(records))
    ok = CliRunner().invoke(main, ["build", "--source", str(write_jsonl(tmp_path / "good.jsonl", records)),
                                   "--data-dir", str(data), "--config", toml, "--gate", "--gate-labels", str(label_file)])
    assert ok.exit_code == 0 and "gate=passed mode=none" in ok.stderr, ok.stderr
    good = current_version(data)
    bad = CliRunner().invoke(main, ["build", "--source", str(write_jsonl(tmp_path / "bad.jsonl", scrambled(records))),
                                    "--data-dir", str(data), "--config", toml, "--gate-labels", str(label_file)])
    assert bad.exit_code == EXIT_REFUSED, bad.stderr
    fields = summary_fields(bad.stderr)
    assert fields["status"] == "refused" and fields["mode"] == "labels"
    assert float(fields["ndcg10"]) < float(fields["previous_ndcg10"]) - 0.05
    assert current_version(data) == good
