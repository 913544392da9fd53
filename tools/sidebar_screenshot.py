"""Render an example article page with the related-articles sidebar to a PNG (docs/sidebar.png).

    .venv/bin/python -m tools.sidebar_screenshot [--data-dir DATA] [--article nk-ukraine-en-1] [--out docs/sidebar.png]

Builds the demo corpus (unless --data-dir names a built one), serves the API on one loopback
port and a news site's article page on another (a cross-origin embed, as on a real site, with
RELATED_CORS_ORIGINS set to the page's origin), lets Debian's Chromium run widget.js, and saves
a screenshot, reduced to a small palette so the committed file stays small.
"""
from __future__ import annotations

import argparse
import html
import json
import sys
import tempfile
from pathlib import Path

from tools.browser import chromium, serving_api, serving_directory

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recommender" / "demo" / "articles.jsonl"
VIEWPORT = {"width": 1100, "height": 600}
PALETTE_COLOURS = 64

PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
<style>
  body {{ margin: 0; font: 16px/1.55 Georgia, "DejaVu Serif", serif; color: #1d1d1f; background: #fafaf7; }}
  header {{ background: #1d2b3a; color: #fff; padding: 14px 40px; font: 700 22px "DejaVu Sans", sans-serif; }}
  header span {{ font-weight: 400; font-size: 14px; opacity: .7; margin-left: 16px; }}
  main {{ display: grid; grid-template-columns: 1fr 320px; gap: 40px; padding: 28px 40px; }}
  h1 {{ font-size: 30px; line-height: 1.2; margin: 0 0 8px; }}
  .meta {{ font: 13px "DejaVu Sans", sans-serif; color: #666; margin-bottom: 18px; text-transform: uppercase; }}
  aside h2 {{ font: 700 13px "DejaVu Sans", sans-serif; letter-spacing: .08em; text-transform: uppercase;
             border-bottom: 3px solid #c0392b; padding-bottom: 6px; margin: 0 0 6px; }}
  .related-articles {{ list-style: none; margin: 0; padding: 0; font-family: "DejaVu Sans", sans-serif; }}
  .related-article {{ padding: 10px 0; border-bottom: 1px solid #ddd; font-size: 14px; line-height: 1.35; }}
  .related-title {{ display: block; color: #1d2b3a; font-weight: 700; text-decoration: none; margin-bottom: 3px; }}
  .related-article time, .related-section {{ font-size: 12px; color: #777; }}
  .related-section {{ text-transform: uppercase; margin-left: 6px; }}
</style></head>
<body>
<header>The Demo Chronicle<span>an example page embedding the related-articles widget</span></header>
<main>
  <article><h1>{title}</h1><div class="meta">{category} · {date}</div>{paragraphs}</article>
  <aside><h2>Related</h2>
    <div data-related-article="{article_id}" data-related-limit="5"></div>
  </aside>
</main>
<script src="{endpoint}/widget.js" defer></script>
</body></html>
"""


def example_page(article: dict, endpoint: str, paragraphs: int = 4) -> str:
    """An article page whose sidebar is left to widget.js; every text from the record is escaped."""
    body = [p.strip() for p in article.get("body", "").replace("\n\n", "\n").split("\n") if p.strip()]
    return PAGE.format(
        lang=html.escape(article.get("lang") or "en"), title=html.escape(article["title"]),
        category=html.escape(article.get("category") or ""), date=html.escape((article.get("published") or "")[:10]),
        paragraphs="".join(f"<p>{html.escape(p)}</p>" for p in body[:paragraphs]),
        article_id=html.escape(article["id"]), endpoint=html.escape(endpoint),
    )


def screenshot(browser, page_url: str, out: Path) -> int:
    """Open the page, wait for the widget, save a palette PNG; returns how many items the sidebar shows."""
    from PIL import Image

    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(page_url)
        page.wait_for_function(
            "() => ['done', 'error'].includes(document.querySelector('[data-related-article]').dataset.relatedState)",
            timeout=60_000,
        )
        shown = page.locator(".related-article").count()
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
    finally:
        page.close()
    with Image.open(out) as image:
        small = image.convert("RGB").quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT)
    small.save(out, optimize=True)
    return shown


def render(data_dir: Path, article: dict, out: Path) -> int:
    from api.app import create_app
    from api.settings import Settings

    with tempfile.TemporaryDirectory() as site_dir, serving_directory(Path(site_dir)) as site:
        with serving_api(create_app(Settings(data_dir=data_dir, cors_origins=[site]))) as api:
            (Path(site_dir) / "article.html").write_text(example_page(article, api), encoding="utf-8")
            with chromium() as browser:
                return screenshot(browser, f"{site}/article.html", out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="A built DATA_DIR (default: build the demo corpus in a temp dir).")
    parser.add_argument("--corpus", type=Path, default=DEMO, help="Where the article's own text comes from.")
    parser.add_argument("--article", default="nk-ukraine-en-1")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "sidebar.png")
    args = parser.parse_args(argv)
    records = (json.loads(line) for line in args.corpus.open(encoding="utf-8"))
    article = next((r for r in records if r["id"] == args.article), None)
    if article is None:
        print(f"sidebar_screenshot: {args.article!r} is not in {args.corpus}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir
        if data_dir is None:
            from recommender.config import PipelineConfig
            from recommender.pipeline.build import build

            data_dir = Path(scratch) / "data"
            build(args.corpus, data_dir, PipelineConfig.load(None))
        shown = render(data_dir, article, args.out)
    print(f"sidebar_screenshot: {args.out} ({args.out.stat().st_size} bytes, {shown} related items)")
    return 0 if shown else 1


if __name__ == "__main__":
    sys.exit(main())
