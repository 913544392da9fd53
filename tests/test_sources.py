"""Reading sources: every bad record becomes a reject with its line, good records are kept."""
from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender.pipeline.articles import Article, Deletion, InvalidRecord, Reject, parse_article
from recommender.errors import RelatedError, SourceError
from recommender.pipeline.sources import read_source, write_rejects


def jsonl(*records: object) -> bytes:
    """Lines from dicts (serialized), str (written verbatim) or bytes (written verbatim)."""
    out = []
    for record in records:
        if isinstance(record, bytes):
            out.append(record)
        elif isinstance(record, str):
            out.append(record.encode())
        else:
            out.append(json.dumps(record).encode())
    return b"\n".join(out) + b"\n"


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.lower().endswith(".gz") else data)
    return path


def check_accounting(ingested) -> None:
    assert ingested.records == len(ingested.articles) + len(ingested.deletions) + len(ingested.rejects)


GOOD_A = {"id": "a", "title": "Alpha", "body": "first"}

BAD_LINES: list[tuple[bytes | str | dict, str | None, str]] = [
    ('{"id": "x", "title": ', None, "invalid JSON: "),
    ("[1, 2]", None, "record is not a JSON object (got array)"),
    ('"just a string"', None, "record is not a JSON object (got string)"),
    ({"title": "no id"}, None, "missing id"),
    ({"id": "   ", "title": "t"}, None, "empty id"),
    ({"id": "x" * 257, "title": "t"}, None, "id too long: 257 characters (max 256)"),
    ({"id": 1.5, "title": "t"}, None, "wrong type for field 'id': expected string, got float"),
    ({"id": "nt", "title": "  ", "body": "<p> </p>"}, "nt", "missing title and body"),
    ({"id": "nb"}, "nb", "missing title and body"),
    ({"id": "wt", "title": 5}, "wt", "wrong type for field 'title': expected string, got int"),
    ({"id": "wl", "title": "t", "lang": 7}, "wl", "wrong type for field 'lang': expected string, got int"),
    ({"id": "wc", "title": "t", "category": ["a"]}, "wc", "wrong type for field 'category': expected string, got array"),
    ({"id": "wu", "title": "t", "url": {}}, "wu", "wrong type for field 'url': expected string, got object"),
    ({"id": "we", "title": "t", "evergreen": "yes"}, "we", "wrong type for field 'evergreen': expected boolean, got string"),
    ({"id": "d1", "title": "t", "published": "yesterday"}, "d1", "unparseable date: 'yesterday'"),
    ({"id": "d2", "title": "t", "published": [2024]}, "d2", "unparseable date: [2024]"),
    ({"id": "d3", "title": "t", "published": 1e300}, "d3", "unparseable date: 1e+300"),
    (b'{"id": "u8", "title": "caf\xe9"}', None, "invalid UTF-8 at byte 27"),
    ({"id": "del", "deleted": True}, "del", "deletion records are only allowed in update files"),
]


def test_every_bad_record_kind_is_rejected_with_line_and_reason(tmp_path: Path) -> None:
    lines = [GOOD_A, *[bad for bad, _, _ in BAD_LINES], "", "   ", {"id": "b", "body": "second"}, {**GOOD_A, "title": "Alpha 2"}]
    ingested = read_source(write(tmp_path, "src.jsonl", jsonl(*lines)))

    first_bad, blank_lines = 2, 2
    after_bad = first_bad + len(BAD_LINES) + blank_lines
    expected = [Reject(1, "a", f"duplicate id: superseded by line {after_bad + 1}")]
    expected += [Reject(first_bad + i, rid, reason) for i, (_, rid, reason) in enumerate(BAD_LINES)]
    got = ingested.rejects
    assert [(r.line, r.id) for r in got] == [(r.line, r.id) for r in expected]
    for reject, want in zip(got, expected):
        assert reject.reason.startswith(want.reason), (reject, want)
    # Survivors in the order of their winning lines; the blank lines are not records.
    assert [(a.id, a.title) for a in ingested.articles] == [("b", ""), ("a", "Alpha 2")]
    assert ingested.records == len(lines) - blank_lines
    check_accounting(ingested)


def test_invalid_later_record_does_not_displace_earlier_valid_one(tmp_path: Path) -> None:
    ingested = read_source(write(tmp_path, "s.jsonl", jsonl(GOOD_A, {"id": "a", "title": 3})))
    assert [a.title for a in ingested.articles] == ["Alpha"]
    assert ingested.rejects == [Reject(2, "a", "wrong type for field 'title': expected string, got int")]


def test_fields_are_normalized(tmp_path: Path) -> None:
    records = [
        {"id": 42, "title": "<b>T</b>", "body": "B &amp; B", "published": "2024-05-01T12:00:00+02:00",
         "lang": "de-AT", "category": " Politik ", "url": " https://x.test/1 ", "evergreen": True, "extra": [1]},
        {"id": "n", "title": "t", "published": "2024-05-01", "lang": "EN_us", "category": "", "url": None},
        {"id": "e", "title": "t", "published": 1714557600, "lang": "?"},
        {"id": "s", "title": "t", "published": "1714557600.5", "lang": None},
        {"id": "z", "title": "t", "published": "2024-05-01T10:00:00.5Z"},
        {"id": "b", "title": "t", "published": ""},
    ]
    arts = {a.id: a for a in read_source(write(tmp_path, "s.ndjson", jsonl(*records))).articles}
    a = arts["42"]
    assert (a.title, a.body, a.lang, a.category, a.url, a.evergreen) == ("T", "B & B", "de", "Politik", "https://x.test/1", True)
    assert a.published == datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    assert a.to_metadata() == {
        "id": "42", "title": "T", "url": "https://x.test/1", "published": "2024-05-01T10:00:00Z",
        "category": "Politik", "lang": "de", "evergreen": True,
    }
    json.dumps(a.to_metadata())
    assert arts["n"].published == datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert (arts["n"].lang, arts["n"].category, arts["n"].url, arts["n"].evergreen) == ("en", None, None, False)
    assert arts["e"].published == datetime(2024, 5, 1, 10, tzinfo=timezone.utc) and arts["e"].lang is None
    assert arts["s"].published == datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=timezone.utc)
    assert arts["z"].to_metadata()["published"] == "2024-05-01T10:00:00.500000Z"
    assert arts["b"].published is None and arts["b"].to_metadata()["published"] is None


def test_deletions_in_update_files_follow_last_wins(tmp_path: Path) -> None:
    data = jsonl(GOOD_A, {"id": "a", "deleted": True}, {"id": "b", "deleted": True}, {"id": "b", "title": "back"},
                 {"id": "c", "deleted": "yes"})
    ingested = read_source(write(tmp_path, "u.jsonl", data), allow_delete=True)
    assert ingested.deletions == [Deletion("a")]
    assert [a.id for a in ingested.articles] == ["b"]
    assert ingested.rejects == [
        Reject(1, "a", "duplicate id: superseded by line 2"),
        Reject(3, "b", "duplicate id: superseded by line 4"),
        Reject(5, "c", "wrong type for field 'deleted': expected boolean, got string"),
    ]
    check_accounting(ingested)


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + json.dumps(GOOD_A).encode() + b"\r\n\r\n" + json.dumps({"id": "b", "title": "B"}).encode() + b"\r\n"
    ingested = read_source(write(tmp_path, "s.jsonl", data))
    assert [a.id for a in ingested.articles] == ["a", "b"] and ingested.rejects == []


@pytest.mark.parametrize("name", ["s.jsonl.gz", "s.JSON.GZ", "s.ndjson.gz"])
def test_gzip_jsonl(tmp_path: Path, name: str) -> None:
    ingested = read_source(write(tmp_path, name, jsonl(GOOD_A, "{bad")))
    assert [a.id for a in ingested.articles] == ["a"]
    assert [(r.line, r.reason[:13]) for r in ingested.rejects] == [(2, "invalid JSON:")]


CSV_TEXT = (
    "ID,Title,Body,Published,Lang,Category,URL,Evergreen,Ignored\n"   # 1
    'a,Alpha,"first line\n'                                          # 2
    "second line, with comma\n"                                       # 3
    'and ""quotes"""' + ",2024-05-01T10:00:00Z,en,news,https://x/a,true,zzz\n"  # 4
    "\n"                                                              # 5
    "b,Beta,plain,,,,,,\n"                                            # 6
    "c,Gamma,x,not a date,,,,,\n"                                     # 7
    'd,"Delta\nwith newline",,,,,,maybe,\n'                          # 8-9
    "e,Epsilon,short row\n"                                          # 10
    "a,Alpha again,<p>html</p>,1714557600,de-DE,,,0,\n"               # 11
    ",,,,,,,,\n"                                                      # 12 (empty row: blank)
    ",Nameless,body,,,,,,\n"                                          # 13
)


def test_csv_with_quoted_multiline_fields(tmp_path: Path) -> None:
    ingested = read_source(write(tmp_path, "s.csv", CSV_TEXT.encode()))
    assert [(a.id, a.title, a.body) for a in ingested.articles] == [("b", "Beta", "plain"), ("a", "Alpha again", "html")]
    b, a = ingested.articles
    assert (b.published, b.lang, b.category, b.url, b.evergreen) == (None, None, None, None, False)
    assert (a.published, a.lang) == (datetime(2024, 5, 1, 10, tzinfo=timezone.utc), "de")
    assert [(r.line, r.id, r.reason) for r in ingested.rejects] == [
        (2, "a", "duplicate id: superseded by line 11"),
        (7, "c", "unparseable date: 'not a date'"),
        (8, "d", "invalid boolean in column 'evergreen': 'maybe' (expected true/false/1/0/yes/no)"),
        (10, "e", "wrong number of fields: expected 9 (as in the header), got 3"),
        (13, None, "missing id"),
    ]
    assert ingested.records == 7
    check_accounting(ingested)


def test_csv_first_record_fields(tmp_path: Path) -> None:
    text = CSV_TEXT.split("\n\n")[0] + "\n"
    (a,) = read_source(write(tmp_path, "s.csv.gz", text.encode())).articles
    assert a.body == 'first line second line, with comma and "quotes"'
    assert (a.category, a.url, a.evergreen) == ("news", "https://x/a", True)


def test_csv_non_utf8_row_is_rejected_others_kept(tmp_path: Path) -> None:
    data = b"id,title,body\n1,Caf\xe9,x\n2,Fine,\xc3\xa9t\xc3\xa9\n"
    ingested = read_source(write(tmp_path, "s.csv", data))
    assert [(a.id, a.body) for a in ingested.articles] == [("2", "été")]
    assert [(r.line, r.id, r.reason) for r in ingested.rejects] == [(2, "1", "invalid UTF-8 in field 2 at character 4")]


@pytest.mark.parametrize("data", [b"", b"\n\n", b"1,Alpha,body\n", b"name,text\nx,y\n", b"id,url\n1,x\n"])
def test_csv_without_usable_header_is_a_source_error(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(SourceError, match="header"):
        read_source(write(tmp_path, "s.csv", data))


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="source file not found: .*missing.jsonl"):
        read_source(tmp_path / "missing.jsonl")
    with pytest.raises(SourceError, match="unknown source format"):
        read_source(write(tmp_path, "s.xml", b"<a/>"))
    with pytest.raises(SourceError, match="unknown source format"):
        read_source(write(tmp_path, "s.gz", b"{}"))
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_bytes(jsonl(GOOD_A))
    with pytest.raises(SourceError, match="cannot read .*Not a gzipped file"):
        read_source(not_gzip)
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(jsonl(GOOD_A) * 50)[:-20])
    with pytest.raises(SourceError, match="cannot read"):
        read_source(truncated)
    assert issubclass(SourceError, RelatedError)


def test_parse_article_raises_only_invalid_record() -> None:
    with pytest.raises(InvalidRecord, match="missing title and body"):
        parse_article({"id": "x", "title": None, "body": None})
    assert parse_article({"id": "x", "deleted": True}, allow_delete=True) == Deletion("x")
    assert isinstance(parse_article({"id": "x", "title": "t", "deleted": False}), Article)


def test_write_rejects_is_utf8_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"
    write_rejects(iter([Reject(3, "ü", "unparseable date: 'März'"), Reject(4, None, "x\ud800")]), path)
    raw = path.read_bytes()
    assert "März".encode() in raw
    rows = [json.loads(line) for line in raw.decode().splitlines()]
    assert rows == [{"line": 3, "id": "ü", "reason": "unparseable date: 'März'"}, {"line": 4, "id": None, "reason": "x\ud800"}]


# ---- properties ---------------------------------------------------------------------------------------

FRAGMENTS = [
    b'{"id":"a","title":"t"}', b'{"id":"b","body":"<p>x</p>"}', b'{"id":"a","deleted":true}', b"{}", b"[]",
    b'{"id":"a"}', b'{"id":1,"title":"\xff"}', b"\xef\xbb\xbf", b"  ", b"\r", b'{"id":"a","title":"t","published":"2024"}',
    b'{"id":"\\ud800","title":"t"}', b'{"id":"c","title":"\\u0000\\ud800"}', b"[" * 3000, b"9" * 5000, b"NaN",
    b'{"id":"c","title":"t","published":-1e308}',
]
LINES = st.lists(st.one_of(st.binary(max_size=30), st.sampled_from(FRAGMENTS)), max_size=25)
SUPPRESS = [HealthCheck.function_scoped_fixture]


def non_blank_lines(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if line and not line.isspace())


@settings(max_examples=150, deadline=None, suppress_health_check=SUPPRESS)
@given(data=st.binary(max_size=300) | LINES.map(b"\n".join), allow_delete=st.booleans())
def test_jsonl_never_raises_and_drops_nothing(tmp_path: Path, data: bytes, allow_delete: bool) -> None:
    ingested = read_source(write(tmp_path, "p.jsonl", data), allow_delete=allow_delete)
    assert ingested.records == non_blank_lines(data)
    check_accounting(ingested)
    write_rejects(ingested.rejects, tmp_path / "rejects.jsonl")
    for article in ingested.articles:
        json.dumps(article.to_metadata(), ensure_ascii=False).encode("utf-8")


@settings(max_examples=100, deadline=None, suppress_health_check=SUPPRESS)
@given(ops=st.lists(st.tuples(st.sampled_from(["valid", "invalid", "junk", "blank", "delete"]), st.sampled_from("abc")), max_size=20))
def test_last_valid_occurrence_wins_in_line_order(tmp_path: Path, ops: list[tuple[str, str]]) -> None:
    lines = {
        "valid": lambda i: {"id": i, "title": "t"},
        "invalid": lambda i: {"id": i, "title": 1},
        "junk": lambda i: "{oops",
        "blank": lambda i: "",
        "delete": lambda i: {"id": i, "deleted": True},
    }
    data = jsonl(*(lines[kind](i) for kind, i in ops)) if ops else b""
    ingested = read_source(write(tmp_path, "p.jsonl", data), allow_delete=True)

    winners: dict[str, tuple[int, str]] = {}
    for line, (kind, i) in enumerate(ops, start=1):
        if kind in {"valid", "delete"}:
            winners.pop(i, None)
            winners[i] = (line, kind)
    assert [(a.id) for a in ingested.articles] == [i for i, (_, k) in winners.items() if k == "valid"]
    assert [d.id for d in ingested.deletions] == [i for i, (_, k) in winners.items() if k == "delete"]
    winning_lines = {line for line, _ in winners.values()}
    expected_reject_lines = [n for n, (kind, _) in enumerate(ops, 1) if kind != "blank" and n not in winning_lines]
    assert [r.line for r in ingested.rejects] == expected_reject_lines
    check_accounting(ingested)


@settings(max_examples=100, deadline=None, suppress_health_check=SUPPRESS)
@given(data=st.binary(max_size=300) | st.lists(st.sampled_from([b"id,title,body", b'1,"a', b"2,b,c", b"\xff,x,y", b'"', b""])).map(b"\n".join))
def test_csv_raises_only_source_errors(tmp_path: Path, data: bytes) -> None:
    try:
        ingested = read_source(write(tmp_path, "p.csv", data))
    except SourceError:
        return
    check_accounting(ingested)
    write_rejects(ingested.rejects, tmp_path / "rejects.jsonl")
