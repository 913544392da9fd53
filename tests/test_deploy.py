"""Running as a service: HEAD, offline /docs, the loading state, what `serve` prints, and the deploy files.

The systemd unit is checked by `systemd-analyze verify` where it exists; the Dockerfile's
HEALTHCHECK command is run against a live server; every `related` command line in the unit,
the Dockerfile and the compose file is parsed by the real CLI.
"""
from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import yaml
from click.testing import CliRunner
from selectolax.lexbor import LexborHTMLParser

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402

from api.app import create_app  # noqa: E402
from api.holder import IndexHolder, load_version  # noqa: E402
from api.settings import Settings  # noqa: E402
from recommender.cli import main  # noqa: E402
from tests.corpora import build_records, stories  # noqa: E402
from tools.browser import serving_api  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RELATED = Path(sys.executable).with_name("related")
ARTICLE = "budget-0"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    data_dir, _ = build_records(tmp_path_factory.mktemp("deploy"), stories())
    return data_dir


def wait_until(predicate, timeout: float = 120.0):
    deadline = time.monotonic() + timeout  # the first load in a fresh clone compiles the numba kernels
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


@pytest.fixture(scope="module")
def client(data_dir) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=data_dir)), raise_server_exceptions=False) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200)
        yield c


def get_paths(client: TestClient) -> list[str]:
    """A concrete URL for every GET route: the documented ones (path parameters filled in), the
    undocumented routes of the app itself (/docs, /openapi.json) and the docs assets."""
    schema = client.get("/openapi.json").json()
    paths = [path.replace("{article_id}", ARTICLE) for path, ops in schema["paths"].items() if "get" in ops]
    for route in client.app.routes:
        if isinstance(route, Route) and "GET" in (route.methods or ()):
            paths.append(route.path)
        elif isinstance(route, Mount):
            paths.append(f"{route.path}/swagger-ui.css")
    return paths


# -- HEAD ---------------------------------------------------------------------------------------
def test_head_answers_every_get_route_as_get_does_without_a_body(client):
    paths = get_paths(client)
    assert {"/healthz", "/readyz", "/docs", "/widget.js", f"/v1/articles/{ARTICLE}/related.html"} <= set(paths)
    for path in [*paths, f"/v1/articles/{ARTICLE}/related?lang=any", "/v1/articles/no-such-article/related"]:
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code, path
        assert head.content == b"", path
        for name in ("content-type", "etag", "cache-control"):
            assert head.headers.get(name) == got.headers.get(name), (path, name)
        if path != "/metrics":  # the only body that changes between two requests
            assert head.headers["content-length"] == str(len(got.content)), path
    assert client.head("/v1/related").status_code == 405, "POST-only routes still refuse HEAD"
    assert 'method="HEAD"' in client.get("/metrics").text, "metrics label HEAD requests as HEAD"


# -- /docs --------------------------------------------------------------------------------------
def test_docs_page_loads_only_assets_of_this_server(client):
    page = client.get("/docs")
    assert page.status_code == 200
    tree = LexborHTMLParser(page.text)
    urls = [n.attributes["src"] for n in tree.css("script[src]")] + [n.attributes["href"] for n in tree.css("link[href]")]
    assert len(urls) >= 3
    for url in urls:
        assert not urlsplit(url).netloc and url.startswith("/"), url
        assert client.get(url).status_code == 200, url
    assert "url: '/openapi.json'" in page.text


def test_path_parameters_have_examples(client):
    schema = client.get("/openapi.json").json()
    path_parameters = [
        (path, p) for path, operations in schema["paths"].items() for op in operations.values()
        for p in op.get("parameters", []) if p["in"] == "path"
    ]
    assert len(path_parameters) >= 2  # related and related.html
    for path, parameter in path_parameters:
        assert parameter.get("examples") or parameter.get("example"), path


def test_docs_render_in_chromium_with_the_internet_blocked(browser, data_dir):
    with serving_api(create_app(Settings(data_dir=data_dir))) as base:
        page = browser.new_page()
        outside: list[str] = []

        def only_loopback(route):
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_loopback)
        try:
            page.goto(f"{base}/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            assert page.locator(".opblock").count() >= 8
            page.locator(".opblock-summary-path", has_text="/related.html").first.click()
            page.get_by_role("button", name="Try it out").first.click()
            assert page.locator("tr[data-param-name='article_id'] input").first.input_value() == "nk-ukraine-en-1"
            assert outside == []
        finally:
            page.close()


# -- loading ------------------------------------------------------------------------------------
def error_code(response) -> str:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]
    return response.json()["error"]["code"]


def test_every_route_says_loading_until_the_first_version_is_loaded(data_dir):
    release = threading.Event()

    def slow_loader(path: Path):
        release.wait(60)
        return load_version(path)

    holder = IndexHolder(data_dir, loader=slow_loader)
    with TestClient(create_app(Settings(data_dir=data_dir), holder=holder), raise_server_exceptions=False) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False and body["status"] == "loading"
        assert (data_dir / "current").resolve().name in body["reason"] and "related build" not in body["reason"]
        assert error_code(c.get(f"/v1/articles/{ARTICLE}/related")) == "loading"
        assert error_code(c.get(f"/v1/articles/{ARTICLE}/related.html")) == "loading"
        assert error_code(c.post("/v1/related", json={"title": "budget vote"})) == "loading"
        info = c.get("/v1/index").json()
        assert info["ready"] is False and info["status"] == "loading" and info["reason"] == body["reason"]
        assert c.get("/healthz").status_code == 200
        release.set()
        wait_until(lambda: c.get("/readyz").status_code == 200)
        assert c.get(f"/v1/articles/{ARTICLE}/related").status_code == 200


def test_no_version_and_a_refused_version_say_so(tmp_path, data_dir):
    with TestClient(create_app(Settings(data_dir=tmp_path / "empty")), raise_server_exceptions=False) as c:
        body = c.get("/readyz").json()
        assert body["status"] == "no_index" and "related build" in body["reason"]
        assert error_code(c.get(f"/v1/articles/{ARTICLE}/related")) == "no_index"

    def broken(path: Path):
        raise OSError("checksum mismatch")

    holder = IndexHolder(data_dir, loader=broken)
    with TestClient(create_app(Settings(data_dir=data_dir), holder=holder), raise_server_exceptions=False) as c:
        body = wait_until(lambda: (r := c.get("/readyz").json())["status"] == "no_index" and r)
        assert "checksum mismatch" in body["reason"]
        assert "checksum mismatch" in c.get(f"/v1/articles/{ARTICLE}/related").json()["error"]["message"]


# -- related serve ----------------------------------------------------------------------------
@pytest.fixture
def no_uvicorn(monkeypatch) -> list[dict]:
    """`related serve` runs up to uvicorn.run, which only records its arguments."""
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    for name in ("RELATED_DATA_DIR", "RELATED_HOST", "RELATED_PORT", "RELATED_WORKERS"):
        monkeypatch.setenv(name, "")  # serve writes its flags into the environment: restored afterwards
        monkeypatch.delenv(name)
    return calls


def test_serve_prints_the_docs_url_and_an_example_related_url(data_dir, no_uvicorn):
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(data_dir), "--host", "0.0.0.0", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8123/docs" in result.stderr
    first_id = json.loads((data_dir / "current" / "articles.jsonl").open().readline())["id"]
    assert f"http://127.0.0.1:8123/v1/articles/{first_id}/related?limit=5" in result.stderr
    assert no_uvicorn[0]["host"] == "0.0.0.0" and no_uvicorn[0]["port"] == 8123


def test_serve_without_a_version_says_how_to_build_one(tmp_path, no_uvicorn):
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8000/docs" in result.stderr and "related build" in result.stderr


# -- deploy files -------------------------------------------------------------------------------
def parses_as_cli(argv: list[str]) -> None:
    """Raise unless `related ARGV...` is a valid command line of this CLI (without running it)."""
    name, *args = argv
    command = main.commands.get(name)
    if command is None and name == "sync":
        pytest.skip("`related sync` comes from the database-sources branch")
    assert command is not None, f"no command `related {name}`"
    command.make_context(name, list(args), parent=click.Context(main, info_name="related"))


def test_systemd_unit_runs_related_serve_and_verifies(tmp_path):
    unit_path = ROOT / "deploy" / "related-serve.service"
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(unit_path)
    program, *argv = shlex.split(unit["Service"]["ExecStart"])
    assert program.endswith("/related") and argv[0] == "serve"
    parses_as_cli(argv)
    assert unit["Service"]["User"] != "root" and unit["Install"]["WantedBy"] == "multi-user.target"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit was parsed but not verified")
    copy = tmp_path / unit_path.name  # verify wants the unit's own name, and an ExecStart that exists
    copy.write_text(unit_path.read_text().replace(program, str(RELATED)))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_is_slim_non_root_and_serves():
    instructions = dockerfile_instructions()
    bases = [args.split()[0] for name, args in instructions if name == "FROM"]
    assert bases and all(base.endswith("-slim") for base in bases)
    final = instructions[max(i for i, (name, _) in enumerate(instructions) if name == "FROM"):]
    users = [args for name, args in final if name == "USER"]
    assert users and users[-1] not in ("root", "0")
    copied = " ".join(args for name, args in instructions if name == "COPY")
    for package in ("api", "index", "recommender"):
        assert re.search(rf"\b{package}\b", copied), f"the image lacks {package}/"
    program, *argv = json.loads(next(args for name, args in final if name == "CMD"))
    assert program == "related"
    parses_as_cli(argv)


def healthcheck_command() -> list[str]:
    args = next(args for name, args in dockerfile_instructions() if name == "HEALTHCHECK")
    assert "--start-period" in args, "the first load may take a while"
    return json.loads(args.split("CMD", 1)[1])


def test_dockerfile_healthcheck_passes_once_ready_and_fails_before(data_dir, tmp_path):
    command = healthcheck_command()
    assert command[0] == "python" and "/readyz" in " ".join(command)
    command[0] = sys.executable

    def check(base: str) -> int:
        env = {"RELATED_PORT": base.rsplit(":", 1)[1], "PATH": "/usr/bin:/bin"}
        return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode

    with serving_api(create_app(Settings(data_dir=data_dir))) as base:
        assert check(base) == 0
    with serving_api(create_app(Settings(data_dir=tmp_path / "empty")), wait_for="/healthz") as base:
        assert check(base) != 0


def test_compose_runs_postgresql_the_api_and_the_sync_job():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert services["db"]["image"].startswith("postgres")
    assert services["db"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["sync"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("api", "sync"):
        assert services[name]["build"] == "." and services[name]["image"] == "related-articles"
    source = services["sync"]["environment"]["RELATED_SYNC_SOURCE"]
    assert source.startswith("postgresql+psycopg://") and source.endswith("@db/news")
    program, *argv = services["api"]["command"]
    assert program == "related"
    parses_as_cli(argv)
    shell, flag, script = services["sync"]["command"]
    script = script.replace("$$", "$")  # compose's escape of a literal $
    assert subprocess.run([shell, "-n", "-c", script], capture_output=True).returncode == 0
    invocations = [shlex.split(line.strip().split("||")[0].split(">")[0]) for line in script.splitlines()
                   if line.strip().startswith(("related ", "until related "))]
    commands = [words[words.index("related") + 1:] for words in invocations]
    assert [argv[0] for argv in commands] == ["info", "build", "sync"]
    for argv in commands:
        parses_as_cli([arg.replace("$RELATED_SYNC_SOURCE", source) for arg in argv])
