"""Language-aware analysis: tokenizing, stop words and Snowball stemming (detection: language.py).

A German article and an English one must not meet on "die" or "will", and "Wahlen"/"Wahl"
must meet each other: so each language gets its own stop words and stemmer, and the
analyzer output is what TF-IDF counts.
"""
from __future__ import annotations

import importlib.util
import re
from collections.abc import Collection
from functools import lru_cache
from pathlib import Path

import Stemmer
from stop_words import get_stop_words

SNOWBALL_NAMES = {
    "en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian",
    "nl": "dutch", "pt": "portuguese", "sv": "swedish", "da": "danish", "no": "norwegian",
    "fi": "finnish", "ru": "russian", "pl": "polish", "tr": "turkish", "ro": "romanian",
}
# Words, with inner apostrophes/hyphens split off; at least one letter so bare numbers don't bind stories.
TOKEN = re.compile(r"[^\W\d_][\w]*|\d+[^\W\d_]\w*", re.UNICODE)
# With `numbers`: also bare numbers of at least two digits (a death toll, a score, a flight number).
TOKEN_OR_NUMBER = re.compile(r"[^\W\d_][\w]*|\d+[^\W\d_]\w*|\d{2,}", re.UNICODE)
# A capital after one of these (or at the start) opens a sentence, so it says nothing of a name.
SENTENCE_START = re.compile(r"(?:^\s*|[.!?:;\"“”«»()\[\]\n]\s*)$")
# French/Italian elision: l'armée -> armée, dell'Italia -> italia.
ELISION = re.compile(r"\b\w{1,4}['’]", re.UNICODE)
MAX_STEM_CACHE = 500_000
ISO_STOP_WORDS = ("de", "fr", "es", "it")  # languages that also take stopwords-iso's fuller list
# Nouns, adjectives and time adverbs of stopwords-iso's lists that tell news stories apart ("rechte":
# right-wing, "Recht": law, "neue", "heute", "consiglio": council, "città", "país"): kept as terms, as
# before. 10kGNAD nDCG@10: 0.6595 without stopwords-iso, 0.653 with its whole German list, 0.655 keeping
# the nouns, 0.6584 keeping these.
ISO_CONTENT_WORDS = {
    "de": frozenset(
        "gott mensch menschen mann recht rechte rechten rechter rechtes ordnung zeit mittel sache teil schluss "
        "uhr tag tage tagen morgen jahr jahre jahren ende ernst wahr schlecht richtig offen suche startseite "
        "gut gute guter gutes groß große großen großer großes gross grosse grossen grosser grosses kleine "
        "kleinen kleiner kleines neue neuen hoch lang lange leicht möglich natürlich bekannt besser besten "
        "beispiel eigen eigene eigenen eigener eigenes ganz ganze ganzen ganzer ganzes mal wissen dank kurz "
        "früher später heute zusammen".split()
    ),
    "fr": frozenset("gens premier première dernier derniere retour".split()),
    "es": frozenset("acuerdo pais paìs general final".split()),
    "it": frozenset(
        "citta città consiglio gruppo mondo paese uomo vita tempo futuro forza titolo registrazione luogo "
        "generale momento scola piedi".split()
    ),
}


@lru_cache(maxsize=1)
def english_stop_words() -> frozenset[str]:
    """scikit-learn's English list, read from its module file alone: importing the sklearn package
    takes about 2 s, most of a one-article `related update`."""
    try:
        spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
        path = Path(list(spec.submodule_search_locations)[0]) / "feature_extraction" / "_stop_words.py"
        module_spec = importlib.util.spec_from_file_location("_related_english_stop_words", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return frozenset(module.ENGLISH_STOP_WORDS)
    except Exception:  # another layout: take the slow, public way
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        return frozenset(ENGLISH_STOP_WORDS)


@lru_cache(maxsize=64)
def stop_words_for(lang: str) -> frozenset[str]:
    """The union of the lists we have for `lang`: scikit-learn's (English), `stop-words`' and, for the
    languages whose `stop-words` list is short (German had 263 words, without "mehr"), stopwords-iso's."""
    words: set[str] = set()
    if lang == "en":
        words |= english_stop_words()
    try:
        words |= {w.lower() for w in get_stop_words(lang)}
    except Exception:  # stop_words raises its own error type for unknown languages
        pass
    if lang in ISO_STOP_WORDS:
        import stopwordsiso  # reads its JSON of every language: only when one of these is analysed

        words |= {w.lower() for w in stopwordsiso.stopwords(lang)} - ISO_CONTENT_WORDS.get(lang, frozenset())
    return frozenset(words)


class Analyzer:
    """Turns (title, body) of one language into weighted tokens: unigrams and word n-grams."""

    def __init__(
        self, lang: str, *, stop_words: bool, stemming: bool, ngram_max: int, name_weight: int = 1, numbers: bool = False
    ) -> None:
        self.lang = lang
        self.ngram_max = ngram_max
        self.name_weight = name_weight
        self._token = TOKEN_OR_NUMBER if numbers else TOKEN
        self._stop = stop_words_for(lang) if stop_words else frozenset()
        name = SNOWBALL_NAMES.get(lang) if stemming else None
        self._stemmer = Stemmer.Stemmer(name) if name else None
        # Each token seen -> its stem, or "" for a token that is dropped (a stop word, a single letter):
        # a text's words are one pass of dict lookups, and counting can look up each distinct token once.
        self._stems: dict[str, str] = {}

    def words(self, text: str) -> list[str]:
        """Stemmed content words in order (stop words removed before stemming); with `name_weight`
        > 1, a capitalized word inside a sentence (a name) comes that many times."""
        return list(filter(None, self.stems(self.tokens(text))))

    def tokens(self, text: str) -> list[str]:
        """The lower-cased tokens of a text, stop words and all (names repeated, as `words` says)."""
        if self.lang in ("fr", "it"):
            text = ELISION.sub(" ", text)
        return self._weighted_names(text) if self.name_weight > 1 else self._token.findall(text.lower())

    def stems(self, tokens: Collection[str]) -> list[str]:
        """The stem of each token, or "" for a token that is dropped (a stop word, a single letter)."""
        stems = self._stems
        try:
            return list(map(stems.__getitem__, tokens))
        except KeyError:  # a token not seen before
            unknown = [w for w in set(tokens) if w not in stems]
            if len(stems) + len(unknown) > MAX_STEM_CACHE:
                stems.clear()
                unknown = list(set(tokens))
            kept = [w for w in unknown if w not in self._stop and len(w) > 1]
            stems.update(dict.fromkeys(unknown, ""))
            stems.update(zip(kept, self._stemmer.stemWords(kept) if self._stemmer is not None else kept))
            return list(map(stems.__getitem__, tokens))

    def _weighted_names(self, text: str) -> list[str]:
        words: list[str] = []
        for match in self._token.finditer(text):
            word = match.group().lower()
            first = match.group()[0]
            name = first.isupper() and not SENTENCE_START.search(text, max(0, match.start() - 4), match.start())
            words.extend([word] * (self.name_weight if name else 1))
        return words

    def surface_forms(self) -> dict[str, str]:
        """Stem -> the shortest word seen with that stem, to show "occupied" rather than "occupi"."""
        forms: dict[str, str] = {}
        if self._stemmer is None:
            return forms
        for word, stem in self._stems.items():
            if not stem:
                continue
            best = forms.get(stem)
            if best is None or (len(word), word) < (len(best), best):
                forms[stem] = word
        return forms

    def terms(self, text: str) -> list[str]:
        words = self.words(text)
        if self.ngram_max < 2:
            return words
        terms = list(words)
        for n in range(2, self.ngram_max + 1):
            terms.extend(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
        return terms


class AnalyzerSet:
    """One analyzer per language, created on first use; unknown languages get no stemming."""

    def __init__(
        self, *, stop_words: bool, stemming: bool, ngram_max: int, name_weight: int = 1, numbers: bool = False
    ) -> None:
        self._options = dict(
            stop_words=stop_words, stemming=stemming, ngram_max=ngram_max, name_weight=name_weight, numbers=numbers
        )
        self._by_lang: dict[str, Analyzer] = {}

    def surface_forms(self) -> dict[str, dict[str, str]]:
        """Each language's stem -> shortest word, languages in the order they were first seen."""
        return {lang: analyzer.surface_forms() for lang, analyzer in self._by_lang.items()}

    def __getitem__(self, lang: str) -> Analyzer:
        analyzer = self._by_lang.get(lang)
        if analyzer is None:
            analyzer = self._by_lang[lang] = Analyzer(lang, **self._options)
        return analyzer
