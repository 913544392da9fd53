"""The `related` command, in-process: build, show (`related ID`), info, rollback, readable failures."""
from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from index.artifacts import current_version, list_versions
from recommender.cli import main
from tests.corpora import SMALL, newsroom, write_jsonl


def write_toml(path, sections: dict) -> str:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_readable_failure(result, message: str, *, status: str = "failed", exit_code: int = 1) -> None:
    """One line on stderr, `related COMMAND: status=... error="..."`, nothing on stdout, no traceback."""
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and re.match(rf"related [a-z]+: status={status} .*error=", lines[0]), lines
    assert message in lines[0], lines[0]
    assert result.stdout == ""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    source = write_jsonl(root / "corpus.jsonl", newsroom())
    config = write_toml(root / "small.toml", SMALL)
    data_dir = root / "data"
    result = run("build", "--source", source, "--data-dir", data_dir, "--config", config)
    return root, source, config, data_dir, result


def test_build_prints_a_summary_line_and_exits_0(built):
    _, _, _, data_dir, result = built
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"built version=\S+ articles=42 rejects=0 records=42 seconds=\d+\.\d\n", result.stdout
    ), result.stdout
    status = result.stderr.strip().splitlines()[-1]
    assert status.startswith("related build: status=built version=") and "articles=42" in status
    assert current_version(data_dir) is not None


def test_second_build_of_the_same_input_is_unchanged(built):
    _, source, config, data_dir, first = built
    result = run("build", "--source", source, "--data-dir", data_dir, "--config", config)
    assert result.exit_code == 0
    assert result.stdout.startswith("unchanged version=")
    assert first.stdout.split()[1] == result.stdout.split()[1]  # same version=...


def test_build_with_missing_source_fails_readably(tmp_path):
    result = run("build", "--source", tmp_path / "missing.jsonl", "--data-dir", tmp_path / "data")
    assert_readable_failure(result, 'status=failed error="source file not found')


def test_build_with_a_bad_config_fails_readably(tmp_path, built):
    _, source, _, _, _ = built
    config = write_toml(tmp_path / "bad.toml", {"text": {"title_weight": 0}})
    result = run("build", "--source", source, "--data-dir", tmp_path / "data", "--config", config)
    assert_readable_failure(result, "title_weight")


def test_related_id_prints_titles_scores_and_why(built):
    _, _, _, data_dir, _ = built
    result = run("budget-0", "--data-dir", data_dir, "--limit", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("budget-0: Marrowgate")
    ranked = [line for line in lines if re.match(r"\s+\d+\. \d\.\d{3}  \S+  .+", line)]
    assert len(ranked) == 3
    titles = {r["id"]: r["title"] for r in newsroom()}
    for line in ranked:
        _rank, score, item_id, title = line.split(maxsplit=3)
        assert 0.0 < float(score) <= 1.0 and titles[item_id] == title
    assert sum(line.strip().startswith("why:") for line in lines) == 3


def test_show_json_is_the_api_shape(built):
    _, _, _, data_dir, _ = built
    result = run("show", "quake-0", "--data-dir", data_dir, "--limit", "2", "--json", "--no-why")
    body = json.loads(result.stdout)
    assert body["article_id"] == "quake-0" and len(body["items"]) == 2
    assert all(item["id"].startswith("quake-") and "why" not in item for item in body["items"])


def test_unknown_article_fails_readably(built):
    _, _, _, data_dir, _ = built
    assert_readable_failure(run("no-such-article", "--data-dir", data_dir), "'no-such-article' is not in index")


def test_info_prints_version_articles_dims_and_built_at(built):
    _, _, _, data_dir, _ = built
    result = run("info", "--data-dir", data_dir)
    assert result.exit_code == 0
    fields = dict(re.findall(r"^(\w+):\s+(.*)$", result.stdout, flags=re.M))
    assert fields["version"] == current_version(data_dir).name
    assert fields["articles"] == "42" and fields["dims"] == "8"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fields["built_at"])


def test_commands_without_an_index_fail_readably(tmp_path):
    assert_readable_failure(run("info", "--data-dir", tmp_path), "run `related build` first")
    assert_readable_failure(run("budget-0", "--data-dir", tmp_path), "run `related build` first")


def test_force_then_rollback(tmp_path, built):
    _, source, config, _, _ = built
    data_dir = tmp_path / "data"
    assert run("build", "--source", source, "--data-dir", data_dir, "--config", config).exit_code == 0
    assert run("build", "--source", source, "--data-dir", data_dir, "--config", config, "--force").exit_code == 0
    first, second = list_versions(data_dir)
    assert current_version(data_dir) == second.resolve()
    result = run("rollback", "--data-dir", data_dir)
    assert result.exit_code == 0 and f"version={first.name}" in result.stderr
    assert current_version(data_dir) == first.resolve()
