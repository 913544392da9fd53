"""Per-language analysis: stop words, Snowball stemming, tokens (detection: test_language.py)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender.vectors.analysis import Analyzer, AnalyzerSet, stop_words_for


def analyzer(lang: str, *, stop_words: bool = True, stemming: bool = True, ngram_max: int = 1) -> Analyzer:
    return Analyzer(lang, stop_words=stop_words, stemming=stemming, ngram_max=ngram_max)


def test_german_stemming_joins_plural_and_singular():
    words = analyzer("de").words("Wahlen Wahl")
    assert len(words) == 2 and words[0] == words[1]


def test_english_stemming_joins_plural_and_singular():
    words = analyzer("en").words("elections election")
    assert len(words) == 2 and words[0] == words[1]


def test_without_stemming_plural_and_singular_stay_apart():
    assert analyzer("de", stemming=False).words("Wahlen Wahl") == ["wahlen", "wahl"]


@pytest.mark.parametrize(
    ("lang", "text", "content"),
    [
        ("en", "The vote and the count were over", {"vote", "count"}),
        ("de", "Die Wahl und der Rat sind nicht fertig", {"wahl", "rat", "fertig"}),
        ("fr", "Les élections et le conseil sont terminées", {"élect", "conseil", "termin"}),
        ("es", "Las elecciones y el consejo de la ciudad", {"eleccion", "consej", "ciud"}),
        ("it", "Le elezioni e il consiglio della città", {"elezion", "consigl", "citt"}),
    ],
)
def test_stop_words_removed_per_language(lang, text, content):
    assert set(analyzer(lang).words(text)) == content


def test_stop_words_are_per_language():
    # "die" is a German article but an English content word; "the" is a stop word in English only.
    assert "die" in stop_words_for("de") and "die" not in stop_words_for("en")
    assert analyzer("en", stemming=False).words("they will die") == ["die"]
    assert analyzer("de", stemming=False).words("die Wahl the") == ["wahl", "the"]


def test_french_elision_is_split_off():
    assert analyzer("fr", stemming=False).words("l'armée dell'") == ["armée"]
    assert analyzer("it", stemming=False).words("dell'Italia") == ["italia"]


def test_numbers_alone_are_not_tokens():
    assert analyzer("en", stemming=False).words("2024 budget 15 g7") == ["budget", "g7"]


def test_numbers_option_keeps_numbers_of_two_or_more_digits():
    words = Analyzer("en", stop_words=True, stemming=False, ngram_max=1, numbers=True).words("2024 budget 15 g7 3")
    assert words == ["2024", "budget", "15", "g7"]


def test_name_weight_repeats_capitalized_words_inside_a_sentence_only():
    named = Analyzer("en", stop_words=True, stemming=False, ngram_max=1, name_weight=2)
    words = named.words("Police arrested Laden near Smith in Kabul. Officials (Reuters) confirmed")
    assert words == ["police", "arrested", "laden", "laden", "smith", "smith", "kabul", "kabul", "officials",
                     "reuters", "confirmed"]
    assert analyzer("en", stemming=False).words("Police arrested Laden") == ["police", "arrested", "laden"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=200), lang=st.sampled_from(["en", "de", "fr", "it", "xx"]))
def test_name_weight_only_repeats_the_words_analysis_keeps(text, lang):
    plain = Analyzer(lang, stop_words=True, stemming=True, ngram_max=1)
    named = Analyzer(lang, stop_words=True, stemming=True, ngram_max=1, name_weight=3)
    words = named.words(text)
    assert sorted(set(words)) == sorted(set(plain.words(text)))
    assert len(plain.words(text)) <= len(words) <= 3 * len(plain.words(text))


def test_bigrams_follow_the_unigrams():
    terms = analyzer("en", ngram_max=2).terms("north korean troops")
    assert terms == ["north", "korean", "troop", "north korean", "korean troop"]


def test_unknown_language_gets_no_stemming_but_still_tokens():
    assert AnalyzerSet(stop_words=True, stemming=True, ngram_max=1)["xx"].words("Elections Wahlen") == [
        "elections", "wahlen",
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=200), lang=st.sampled_from(["en", "de", "fr", "es", "it", "xx"]))
def test_analyzer_never_raises_and_returns_lowercase_unigrams(text, lang):
    tokens = analyzer(lang).terms(text)
    assert isinstance(tokens, list)
    for token in tokens:
        assert token and not any(c.isspace() for c in token)
        assert token == token.lower()


def test_english_stop_words_are_scikit_learns():
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    from recommender.vectors.analysis import english_stop_words

    assert english_stop_words() == ENGLISH_STOP_WORDS
