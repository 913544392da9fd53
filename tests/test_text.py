"""Text cleaning: HTML to visible text, Unicode normalization, invisible characters, whitespace."""
from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.vectors.text import clean_text, html_to_text, remove_invisible


def test_script_and_style_content_is_dropped() -> None:
    raw = "<style>p { color: red }</style><p>Visible</p><script>var secret = 1;</script><noscript>no js</noscript>"
    assert clean_text(raw) == "Visible"


def test_entities_are_decoded_with_and_without_markup() -> None:
    assert clean_text("<p>Tom &amp; Jerry &eacute;t&eacute; &#8364;5</p>") == "Tom & Jerry été €5"
    assert clean_text("Tom &amp; Jerry") == "Tom & Jerry"
    # Decoded markup-looking text stays text: it is never parsed a second time.
    assert clean_text("&lt;script&gt;x&lt;/script&gt;") == "<script>x</script>"


def test_block_elements_separate_words_inline_elements_do_not() -> None:
    raw = "<h1>Title</h1><p>end</p><p>start<br>next<li>item</li></p><div>New<b>s</b> <i>flash</i></div>"
    assert clean_text(raw) == "Title end start next item News flash"


def test_full_document_and_comments() -> None:
    raw = "<!DOCTYPE html><html><head><meta charset=utf-8></head><body><!-- hidden --><p>Body</p></body></html>"
    assert clean_text(raw) == "Body"


def test_plain_text_with_less_than_sign_survives() -> None:
    assert clean_text("a < b and c > d") == "a < b and c > d"


def test_html_to_text_keeps_plain_text_unchanged() -> None:
    text = "plain text\nwith lines"
    assert html_to_text(text) is text


def test_nfkc_folds_compatibility_forms() -> None:
    assert clean_text("ﬁnance ＡＢＣ １２３ x\u00a0y Ⅻ") == "finance ABC 123 x y XII"


def test_invisible_characters_removed_and_whitespace_collapsed() -> None:
    raw = "\ufeff  zero\u200bwidth\u200d join\x00null\x07 \t\r\n soft\u00adhyphen \u2028 rtl\u202emark \ud800 "
    assert clean_text(raw) == "zerowidth joinnull softhyphen rtlmark"


@pytest.mark.parametrize("raw", ["", "   ", "\n\t", "<p></p>", "<script>only()</script>", "\u200b"])
def test_empty_results(raw: str) -> None:
    assert clean_text(raw) == ""


def test_invisible_pattern_covers_this_pythons_unicode_database() -> None:
    """The hard-coded class must cover every non-whitespace Cc/Cf/Cs code point (it may cover more)."""
    missing = [
        hex(cp)
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp)) in {"Cc", "Cf", "Cs"}
        and not chr(cp).isspace()
        and remove_invisible(chr(cp)) != ""
    ]
    assert missing == []


@settings(max_examples=300, deadline=None)
@given(st.text() | st.lists(st.sampled_from(["<p>", "</p>", "<b>", "&amp;", "&#0;", "<script>", "\u200b", " ", "x", "ﬁ"])).map("".join))
def test_clean_text_output_is_normalized(raw: str) -> None:
    text = clean_text(raw)
    assert text == text.strip()
    assert "  " not in text
    assert not any(c.isspace() and c != " " for c in text)
    assert not any(unicodedata.category(c) in {"Cc", "Cf", "Cs"} for c in text)
    text.encode("utf-8")  # no lone surrogates
