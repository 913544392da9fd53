"""`related`: a thin click layer over the library.

Every failure ends with exactly one line on stderr, `related COMMAND: status=... error="..."`, and a
documented exit code (README, "Exit codes"), never a traceback for an error the user can act on.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn

import click

from index.errors import ArtifactError, BuildLockedError
from recommender.config import PipelineConfig
from recommender.errors import RelatedError

EXIT_FAILED = 1  # status=failed: missing or unreadable input, unwritable data dir, unknown id, corrupt version, ...
EXIT_INVALID = 2  # status=invalid: a bad option or argument (click's own code), or a bad RELATED_* setting
EXIT_REFUSED = 3  # `build --gate`: the new version is worse than the current one and was not switched to
EXIT_LOCKED = 75  # EX_TEMPFAIL: another build or update is running; try again later
DEFAULT_DATA_DIR = "data"

log = logging.getLogger("related")


def data_dir_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=lambda: os.environ.get("RELATED_DATA_DIR", DEFAULT_DATA_DIR),
        show_default="$RELATED_DATA_DIR or ./data",
        help="Directory holding versions/ and the `current` link.",
    )(func)


def config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Pipeline configuration (TOML); defaults are used for anything it leaves out.",
    )(func)


def query_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--query", default=None,
        help="Database sources: a SELECT aliasing columns to id, title, body, published, lang, category, url "
             "(updated_at, deleted); `wordpress` for the shipped WordPress query; or a .sql file. "
             "Default: source.query of the config, else table `articles`.",
    )(func)


def structured(**fields: Any) -> str:
    """key=value pairs for log lines; values with spaces or quotes are JSON-quoted."""
    out = []
    for key, value in fields.items():
        text = str(value)
        if not text or any(c.isspace() or c in "\"=" for c in text):
            text = json.dumps(text, ensure_ascii=False)
        out.append(f"{key}={text}")
    return " ".join(out)


def status_line(ctx: click.Context | None, status: str, message: str, **fields: Any) -> str:
    """The one line a failure prints: `related build: status=failed error="..."` (cron greps status=)."""
    command = "related" if ctx is None or ctx.parent is None else f"related {ctx.info_name}"
    return f"{command}: {structured(status=status, **fields, error=' '.join(message.split()))}"


def fail(status: str, message: str, exit_code: int, **fields: Any) -> NoReturn:
    click.echo(status_line(click.get_current_context(), status, message, **fields), err=True)
    sys.exit(exit_code)


def describe_os_error(err: OSError) -> str:
    """`Permission denied: /srv/data` rather than `[Errno 13] Permission denied: '/srv/data'`."""
    if not err.strerror:
        return str(err)
    paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
    return f"{err.strerror}: {' -> '.join(paths)}" if paths else err.strerror


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures into one status line and a documented exit code, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BuildLockedError as err:
            fail("locked", str(err), EXIT_LOCKED)
        except (RelatedError, ArtifactError) as err:
            fail("failed", str(err), EXIT_FAILED)
        except OSError as err:  # the file system refused: missing, unreadable or unwritable paths, disk full
            fail("failed", describe_os_error(err), EXIT_FAILED)

    return wrapper


NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class RelatedGroup(click.Group):
    """`related ID` is short for `related show ID`; usage errors are one status line too."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return "show", self.commands["show"], args
        return super().resolve_command(ctx, args)

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except NO_ARGS_IS_HELP as err:  # plain `related`: the help is what was asked for
            err.show()
            sys.exit(err.exit_code)
        except click.ClickException as err:  # click would print usage, a hint and the error on 4+ lines
            ctx = getattr(err, "ctx", None)
            command = "related" if ctx is None or ctx.parent is None else f"related {ctx.info_name}"
            click.echo(status_line(ctx, "invalid", f"{err.format_message()} (see `{command} --help`)"), err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=RelatedGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log every stage.")
@click.version_option(package_name="related-articles")
def main(verbose: bool) -> None:
    """"More like this" for news sites: build, update, serve and evaluate related-article lists."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@main.command()
@click.option("--source", required=True,
              help="Corpus (.jsonl or .csv, optionally .gz): a path, a database URL (sqlite:///cms.db, "
                   "postgresql+psycopg://user@host/db), or with --dask also an fsspec URL (s3://...).")
@data_dir_option
@config_option
@query_option
@click.option("--dask", "dask_scheduler", metavar="ADDRESS", default=None,
              help="Run the work on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786); "
                   "default: build.dask_scheduler of the config, else this process.")
@click.option("--force", is_flag=True, help="Build a new version even when input and config are unchanged.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when stderr is a terminal).")
@click.option("--gate", "use_gate", is_flag=True,
              help=f"Evaluate the new version against the current one before switching; exit {EXIT_REFUSED} if refused.")
@click.option("--gate-labels", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Labels JSONL for the gate (nDCG@10); without it the gate compares with the current lists.")
@user_errors
def build(
    source: str, data_dir: Path, config_path: Path | None, query: str | None, dask_scheduler: str | None,
    force: bool, progress: bool | None, use_gate: bool, gate_labels: Path | None,
) -> None:
    """Build a new index version from SOURCE and make it current.

    Cron-safe: exit 75 when another build/update holds the lock, 3 when --gate refuses the new
    version (it stays on disk, not current), 1 on other failures (the previous version stays
    current). Ends with one key=value line on stderr.
    """
    from recommender.pipeline.build import build as run_build
    from recommender.pipeline.gate import GateRefused, make_gate

    config = PipelineConfig.load(config_path).with_query(query)
    verdicts: list[Any] = []
    gate = None
    if use_gate or gate_labels is not None:
        judge = make_gate(config.build, gate_labels)

        def gate(candidate: Path, previous: Path | None) -> Any:
            verdicts.append(judge(candidate, previous))
            return verdicts[-1]

    try:
        with dask_executor(dask_scheduler or config.build.dask_scheduler, config) as executor:
            report = run_build(
                source, data_dir, config, force=force, progress=sys.stderr.isatty() if progress is None else progress,
                gate=gate, executor=executor,
            )
    except GateRefused as err:
        click.echo(f"related build: status=refused version={err.version.name} {err.result.summary()} "
                   f"{structured(error=str(err))}", err=True)
        sys.exit(EXIT_REFUSED)
    if report.rejects:
        click.echo(f"{report.rejects} records rejected; see {data_dir / 'rejects.jsonl'}", err=True)
    line = structured(
        status="unchanged" if report.unchanged else "built",
        version=report.version.name if report.version else "-", articles=report.articles, rejects=report.rejects,
        records=report.records, seconds=f"{report.seconds:.3f}",
    )
    if verdicts:
        line += " " + verdicts[-1].summary()
    click.echo(f"related build: {line}", err=True)
    click.echo(report.summary())


def dask_executor(address: str, config: PipelineConfig) -> AbstractContextManager[Any]:
    """The Dask executor for a scheduler address; no address: None, the build's own process."""
    if not address:
        return nullcontext()
    try:
        from recommender.pipeline.dask_build import DaskExecutor
    except ImportError as err:
        raise RelatedError(f"a Dask build needs the dask extra (pip install 'related-articles[dask]'): {err}") from None
    return DaskExecutor(address, config.build.dask_partition_bytes, config.build.dask_shared_dir)


@main.command()
@click.argument("article_id")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 100))
@click.option("--lang", default=None, help="Language filter; `any` for all (default: the article's).")
@click.option("--why/--no-why", default=True, show_default=True, help="Show the shared terms.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON the API would return.")
@data_dir_option
@user_errors
def show(article_id: str, limit: int, lang: str | None, why: bool, as_json: bool, data_dir: Path) -> None:
    """Print the related list of ARTICLE_ID (also: `related ARTICLE_ID`)."""
    from recommender.policy.ranking import RelatedQuery
    from recommender.related import RelatedIndex

    index = RelatedIndex.open(data_dir)
    result = index.for_article(article_id, RelatedQuery(limit=limit, lang=lang, explain=why))
    if as_json:
        click.echo(json.dumps(result.__dict__, ensure_ascii=False, indent=2))
        return
    source = index.item_metadata(index.row_of[article_id])
    click.echo(f"{article_id}: {source['title']}  [{index.name}]")
    for rank, item in enumerate(result.items, 1):
        click.echo(f"{rank:>3}. {item['score']:.3f}  {item['id']}  {item['title']}")
        if why and item.get("why"):
            click.echo(f"        why: {', '.join(item['why'])}")
    if result.fill_reason:
        click.echo(f"     ({result.fill_reason})")


@main.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True)
@user_errors
def info(data_dir: Path, as_json: bool) -> None:
    """Version, counts, dims and build time of the current index."""
    from recommender.related import RelatedIndex

    details = RelatedIndex.open(data_dir).info()
    if as_json:
        click.echo(json.dumps(details, indent=2))
        return
    counts = details.get("counts") or {}
    click.echo(f"version:    {details['version']}")
    click.echo(f"articles:   {details['articles']}")
    click.echo(f"rejects:    {counts.get('rejects', 0)}")
    click.echo(f"vocabulary: {counts.get('vocabulary')}")
    click.echo(f"dims:       {details['dims']}")
    click.echo(f"index:      {details['index_type']}")
    click.echo(f"built_at:   {details['built_at']}")
    from recommender.pipeline.update import drift_advice

    drift = details.get("drift") or {}
    if drift.get("base_version"):
        click.echo(
            f"drift:      {drift.get('updates_since_build', 0)} updates since full build {drift['base_version']}: "
            f"new articles {drift.get('new_share', 0.0):.1%}, out-of-vocabulary tokens {drift.get('oov_token_share', 0.0):.1%}"
        )
    build_config = PipelineConfig.from_manifest(details.get("config") or {}, origin="manifest").build
    reasons = drift_advice(drift, build_config)
    click.echo("rebuild:    " + ("recommended: " + "; ".join(reasons) if reasons else "not needed"))


@main.command()
@data_dir_option
@click.option("--host", default=None, help="Default: $RELATED_HOST or 127.0.0.1.")
@click.option("--port", default=None, type=int, help="Default: $RELATED_PORT or 8000.")
@click.option("--workers", default=None, type=int, help="Default: $RELATED_WORKERS or 1.")
@user_errors
def serve(data_dir: Path, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP API (flags override the RELATED_* environment).

    With several workers, /metrics shows their sums: they keep their metrics in files under
    $PROMETHEUS_MULTIPROC_DIR if set, else in a private temporary directory removed at exit.
    """
    import uvicorn

    flags = {"data_dir": data_dir, "host": host, "port": port, "workers": workers}
    os.environ.update({f"RELATED_{name.upper()}": str(v) for name, v in flags.items() if v is not None})
    from api.metrics import worker_metrics_dir
    from api.settings import Settings, describe_invalid
    from api.startup import startup_lines
    from pydantic import ValidationError

    try:
        settings = Settings()
    except ValidationError as err:
        fail("invalid", describe_invalid(err, flags={name for name, v in flags.items() if v is not None}), EXIT_INVALID)
    check_can_listen(settings.host, settings.port)
    for line in startup_lines(settings):
        click.echo(line, err=True)
    with worker_metrics_dir(settings.workers):
        uvicorn.run(
            "api.app:create_app", factory=True, host=settings.host, port=settings.port,
            workers=settings.workers, log_level="info", access_log=False,
            http="api.http_protocol:BoundedHeadProtocol", h11_max_incomplete_event_size=settings.max_header_bytes,
            timeout_keep_alive=settings.keep_alive_seconds,
        )


def check_can_listen(host: str, port: int) -> None:
    """Bind once before uvicorn does: a taken port or unknown host is then one status line, not a log dump."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as err:
        raise RelatedError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


@main.command()
@click.option("--corpus", required=True, help="Corpus (.jsonl or .csv) or a database URL (sqlite:///cms.db, ...).")
@query_option
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Labels JSONL ({id, story, category}); graded relevance 2 story / 1 category.")
@click.option("--qrels", "qrels_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TREC qrels (qid 0 docid grade) to use instead of labels.")
@click.option("--config", "configs", multiple=True,
              help="Config TOML or shipped name (default, tfidf_cosine, bm25, ...); repeatable. "
                   "Default: default + tfidf_cosine + bm25. The first is the reference of the significance tests.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output dir: metrics.json, summary.md, report.html, runs/, qrels.txt, indexes/.")
@click.option("--queries", default=1000, show_default=True, type=click.IntRange(1), help="At most this many queries.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the query sample.")
@click.option("--rel-level", type=click.IntRange(1), default=None,
              help="Grade counted as relevant by P/R/MRR (default: 2 with stories, else 1).")
@click.option("--force-build", is_flag=True, help="Rebuild pipeline indexes even when unchanged (for build time/memory).")
@user_errors
def evaluate(
    corpus: str, query: str | None, labels_path: Path | None, qrels_path: Path | None, configs: tuple[str, ...], out: Path,
    queries: int, seed: int, rel_level: int | None, force_build: bool,
) -> None:
    """Evaluate configs and baselines on a labelled corpus: metrics, TREC runs and reports in OUT."""
    from recommender.evaluation.evaluate import load_configs, run_evaluation
    from recommender.evaluation.report import main_table

    loaded = [replace(c, pipeline=c.pipeline.with_query(query)) if c.pipeline else c for c in load_configs(configs)]
    evaluation = run_evaluation(
        corpus, loaded, out, labels_path=labels_path, qrels_path=qrels_path, queries=queries,
        seed=seed, level=rel_level, force_build=force_build,
        progress=lambda message: click.echo(f"related evaluate: {message}", err=True),
    )
    header, rows = main_table(evaluation)
    shown = ["config", "nDCG@10", "P@10", "R@100", "MRR@10", "ANN R@10", "p50 ms"]
    positions = [header.index(name) for name in shown]
    click.echo("  ".join(f"{name:>12}" for name in shown))
    for row in rows:
        click.echo("  ".join(f"{row[p]:>12}" for p in positions))
    click.echo(f"report: {out / 'report.html'}", err=True)


@main.command()
@click.option("--source", required=True,
              help="Update file (corpus format; records with \"deleted\": true remove an article), or a database "
                   "URL (all its rows; rows flagged deleted remove articles).")
@data_dir_option
@config_option
@query_option
@user_errors
def update(source: str, data_dir: Path, config_path: Path | None, query: str | None) -> None:
    """Add, replace and delete articles in the current version, without refitting, and switch to the result.

    Same exit codes as build (75 locked, 1 failed with the previous version still current). Ends
    with one key=value line on stderr; says when a full rebuild is recommended (drift).
    """
    from recommender.pipeline.changes import changes_of

    config = PipelineConfig.load(config_path) if config_path else None
    query = query if query is not None or config is None else config.source.query or None
    apply_changes("update", lambda: changes_of(source, query), data_dir, config)


@main.command()
@click.option("--source", required=True, envvar="RELATED_SYNC_SOURCE", show_envvar=True,
              help="Database URL the current version was built from (sqlite:///cms.db, postgresql+psycopg://...).")
@data_dir_option
@config_option
@query_option
@user_errors
def sync(source: str, data_dir: Path, config_path: Path | None, query: str | None) -> None:
    """Apply the database rows changed since the current version's watermark (updated_at), and its
    deleted rows, as `related update` does: the cron job that keeps the index in step with a CMS.

    The watermark is stored in the version and advances only when the new version is published, so
    a failed run is re-applied by the next. Same exit codes and status line as update (75 locked,
    1 failed); `status=unchanged` when nothing changed.
    """
    from recommender.pipeline.changes import DatabaseChanges

    config = PipelineConfig.load(config_path) if config_path else None
    query = query if query is not None or config is None else config.source.query or None
    apply_changes("sync", lambda: DatabaseChanges(source, query, since_watermark=True), data_dir, config)


def apply_changes(command: str, changes: Callable[[], Any], data_dir: Path, config: PipelineConfig | None) -> None:
    """Run an update (`update`, `sync`) and print its status line (errors: the one line of user_errors)."""
    from recommender.pipeline.update import update as run_update

    report = run_update(changes(), data_dir, build_config=config.build if config else None)
    for reason in report.rebuild_reasons:
        click.echo(f"related {command}: full rebuild recommended: {reason}", err=True)
    click.echo(f"related {command}: {report.summary()}", err=True)


@main.command()
@click.argument("version", required=False)
@data_dir_option
@user_errors
def rollback(version: str | None, data_dir: Path) -> None:
    """Make VERSION (default: the newest version older than the current one) current again."""
    from index.artifacts import build_lock, current_version
    from index.artifacts import rollback as run_rollback

    with build_lock(data_dir):
        before = current_version(data_dir)
        target = run_rollback(data_dir, version)
    click.echo(
        f"related rollback: {structured(status='ok', version=target.name, previous=before.name if before else '-')}",
        err=True,
    )
