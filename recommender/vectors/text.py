"""Raw article text (possibly HTML, odd Unicode) -> plain text the analyzer can tokenize.

Kept apart from validation so that query-time code can clean text exactly as the build did.
"""
from __future__ import annotations

import html
import re
import unicodedata

from selectolax.lexbor import LexborHTMLParser

# Elements whose content is never prose a reader sees.
_INVISIBLE_TAGS = ["script", "style", "noscript", "template"]

# Block-level and line-breaking elements: their boundaries separate words ("<p>end</p><p>start" must not
# become "endstart"), while inline ones must not ("<b>New</b>s" stays "News"). Inserting a space before such
# tags is much cheaper than walking the DOM in Python.
_BLOCK_TAG = re.compile(
    r"<(?=/?(?:address|article|aside|blockquote|br|caption|dd|details|dialog|div|dl|dt|fieldset|figcaption"
    r"|figure|footer|form|h[1-6]|header|hr|img|li|main|nav|ol|p|pre|section|summary|table|tbody|td|tfoot|th"
    r"|thead|title|tr|ul)[\s/>])",
    re.IGNORECASE,
)

# Cc, Cf and Cs characters that are not whitespace (whitespace is collapsed instead): C0/C1 controls,
# zero-width and bidi marks, soft hyphen, BOM, tag characters, lone surrogates (JSON "\ud800" escapes
# produce them and they cannot be written as UTF-8). Hard-coded because scanning the Unicode database at
# import takes ~0.2 s; tests/test_text.py checks it still covers the running Python's database.
# As regex source (escapes, no literal characters), so JSON Schema patterns can embed it (api/schemas.py).
INVISIBLE_CLASS = (
    r"\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    r"\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    r"\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    r"\U000e0001\U000e0020-\U000e007f"
)
_INVISIBLE_CHARS = re.compile(f"[{INVISIBLE_CLASS}\ud800-\udfff]")


def html_to_text(raw: str, *, keep_script_text: bool = False) -> str:
    """Visible text of an HTML fragment or document; plain text passes through with entities decoded.

    The parser only runs when the string contains '<' because most bodies in practice are plain text
    and parsing costs far more than the check. `keep_script_text` keeps what script and style
    elements hold, as text: for one-line fields such as titles, where a `<script>` is something
    typed (or injected) that a reader should see as it is (escaped when shown), not a page's code.
    """
    if "<" not in raw:
        return html.unescape(raw) if "&" in raw else raw
    tree = LexborHTMLParser(_BLOCK_TAG.sub(" <", raw))
    if not keep_script_text:
        tree.strip_tags(_INVISIBLE_TAGS)
    root = tree.root
    return root.text(separator="") if root is not None else ""


def remove_invisible(text: str) -> str:
    """Drop control, format (zero-width, bidi) and surrogate characters; whitespace is left alone."""
    return _INVISIBLE_CHARS.sub("", text)


def clean_text(raw: str, *, keep_script_text: bool = False) -> str:
    """Plain, NFKC-normalized, single-spaced text: what gets tokenized and shown.

    NFKC folds compatibility forms (ligatures, full-width letters, non-breaking spaces) so that visually
    equal words become equal tokens.
    """
    text = " ".join(unicodedata.normalize("NFKC", html_to_text(raw, keep_script_text=keep_script_text)).split())
    # After whitespace is collapsed, isprintable() is a fast exact test for "nothing invisible left"
    # (it is False for Cc/Cf/Cs), so the slower regex only runs on the rare text that needs it.
    if not text.isprintable():
        text = " ".join(remove_invisible(text).split())
    return text
