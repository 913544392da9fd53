"""Security basics (README, "Threat model"): the admin token compared in constant time, bounded request
heads and bodies, a request timeout, ids that never become paths, CORS closed unless configured."""
from __future__ import annotations

import asyncio
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

import api.deps
from api.limits import RequestTimeoutMiddleware
from tests.live_server import live_server
from tests.test_api import ADMIN_TOKEN, build_index, error, ready, related, serve

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("security") / "data"
    build_index(data)
    return data


def test_admin_token_is_compared_in_constant_time(data_dir, monkeypatch):
    calls = []
    real = api.deps.hmac.compare_digest

    def spy(given, expected):
        calls.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(api.deps.hmac, "compare_digest", spy)
    with serve(data_dir) as client:
        for wrong in ("x", ADMIN_TOKEN[:-1], ADMIN_TOKEN + "x", "e" * 40):
            error(client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {wrong}"}), 403, "forbidden")
        assert client.post("/v1/admin/reload", headers=AUTH).status_code == 200
    assert [given for given, _ in calls] == [t.encode() for t in ("x", ADMIN_TOKEN[:-1], ADMIN_TOKEN + "x", "e" * 40,
                                                                  ADMIN_TOKEN)]
    assert {expected for _, expected in calls} == {ADMIN_TOKEN.encode()}


def test_ids_never_reach_the_file_system(data_dir, tmp_path):
    """Ids are keys of a hash index, never paths: `../` finds nothing, and a posted one stays an id."""
    with serve(data_dir) as client:
        ready(client)
        for hostile in ("../../../../etc/passwd", "..", "../current/manifest.json", "/etc/passwd", "versions"):
            encoded = quote(hostile, safe="").replace(".", "%2E")  # or the client would resolve the dots itself
            error(client.get(f"/v1/articles/{encoded}/related"), 404, "article_not_found")
    posted_root = tmp_path / "posted"
    build_index(posted_root / "data")
    before = sorted(p.relative_to(posted_root) for p in posted_root.rglob("*"))
    hostile = "../../escaped"
    with serve(posted_root / "data") as client:
        ready(client)
        body = {"id": hostile, "title": "Harbour flood pumps", "body": "Firefighters pump water at the levee."}
        assert client.post("/v1/admin/articles", json=body, headers=AUTH).status_code == 200
        encoded = quote(hostile, safe="").replace(".", "%2E")
        assert client.get(f"/v1/articles/{encoded}/related").json()["article_id"] == hostile
    assert not (posted_root / "escaped").exists() and not (posted_root.parent / "escaped").exists()
    created = {p.relative_to(posted_root).parts[:3] for p in posted_root.rglob("*")} - {p.parts[:3] for p in before}
    assert all(parts[:2] == ("data", "versions") or parts == ("data", "current") for parts in created), created


def test_cors_is_closed_by_default_and_opens_only_to_configured_origins(data_dir):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    with serve(data_dir) as closed:
        ready(closed)
        assert "access-control-allow-origin" not in related(closed, "flood-0", limit=2).headers
        response = closed.options("/v1/related", headers=preflight)
        assert "access-control-allow-origin" not in response.headers and response.status_code >= 400
    with serve(data_dir, cors_origins=["https://cms.example"]) as opened:
        ready(opened)
        allowed = opened.options("/v1/related", headers=preflight | {"Origin": "https://cms.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://cms.example"
        refused = opened.options("/v1/related", headers=preflight)
        assert "access-control-allow-origin" not in refused.headers


def test_admin_body_over_the_limit_is_413(data_dir):
    with serve(data_dir, max_body_bytes=1000) as client:
        line = json.dumps({"id": "big", "title": "x" * 2000}).encode()
        error(client.post("/v1/admin/articles", content=line, headers=AUTH), 413, "payload_too_large")


def raw_request(base: str, head: bytes, body: bytes = b"", *, read_timeout: float = 10.0) -> tuple[int, dict]:
    """One HTTP/1.1 exchange on a plain socket (an HTTP client would refuse to send what we send)."""
    address = urlsplit(base)
    with socket.create_connection((address.hostname, address.port), timeout=read_timeout) as sock:
        sock.sendall(head + body)
        received = b""
        while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < _length(received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    status = int(received.split(b" ", 2)[1])
    return status, json.loads(received.split(b"\r\n\r\n", 1)[1] or b"{}")


def _length(response: bytes) -> int:
    for line in response.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_request_head_over_the_limit_is_431_on_the_real_server(data_dir, tmp_path):
    with live_server(data_dir, tmp_path / "serve.log", max_header_bytes="4096") as base:
        ok, _ = raw_request(base, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fine: " + b"a" * 1000 + b"\r\n\r\n")
        assert ok == 200
        status, body = raw_request(base, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        assert status == 431 and body["error"]["code"] == "header_too_large"
        status, _ = raw_request(base, b"GET /healthz?" + b"q" * 8000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 431
        # A body is not part of the head: a small head with a body larger than the head limit is fine.
        draft = json.dumps({"title": "Harbour flood", "body": "pumps " * 2000}).encode()
        status, body = raw_request(base, b"POST /v1/related HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                   + f"Content-Length: {len(draft)}\r\n\r\n".encode(), draft)
        assert status == 200 and "items" in body, body


def test_a_body_that_does_not_arrive_in_time_is_408_on_the_real_server(data_dir, tmp_path):
    with live_server(data_dir, tmp_path / "serve.log", request_timeout_seconds="1") as base:
        head = b"POST /v1/related HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        status, body = raw_request(base, head, b'{"title": ')  # and then nothing
        assert status == 408 and body["error"]["code"] == "request_timeout"


def test_work_that_overruns_the_timeout_is_503():
    async def slow(scope, receive, send):
        await asyncio.sleep(5)

    async def fast(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def call(app, path: str = "/v1/related") -> list[dict]:
        sent: list[dict] = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        await RequestTimeoutMiddleware(app, seconds=0.2)({"type": "http", "path": path, "headers": []}, receive, send)
        return sent

    def run(*args: object) -> list[dict]:  # a loop of its own, whatever another test left running in this thread
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(lambda: asyncio.run(call(*args))).result()

    timed_out = run(slow)
    assert timed_out[0]["status"] == 503 and json.loads(timed_out[1]["body"])["error"]["code"] == "timeout"
    assert run(fast)[0]["status"] == 200
    assert run(fast, "/v1/admin/articles")[0]["status"] == 200
