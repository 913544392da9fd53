"""The language of a record or draft that does not say: detected among the languages the index can use.

A guess outside the index's languages empties a list (a short English title read as Latin finds no
Latin neighbours), and so does a confident-looking guess on a few words. So detection only chooses
among `languages`, answers only above a minimum confidence on a minimum of text, and otherwise
falls back to a default: the configured `text.default_lang`, or the corpus majority.
"""
from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from recommender.config import SUPPORTED_LANGUAGES, TextConfig

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

DETECT_CHARS = 2000  # enough text to tell; longer texts cost time and change nothing
FALLBACK_LANG = "en"  # the default of a corpus that declares no language and detects none confidently


@lru_cache(maxsize=1)
def _model() -> LanguageIdentifier:
    """py3langid's model with normalized probabilities (loaded on first use: it takes a second or more)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@lru_cache(maxsize=32)
def _identifier(languages: tuple[str, ...]) -> LanguageIdentifier | None:
    """The model restricted to those of `languages` it knows (a shallow copy: the tables are shared);
    None when it knows none of them."""
    model = _model()
    labels = set(model.labels)
    known = [lang for lang in languages if lang in labels]
    if not known:
        return None
    restricted = copy.copy(model)
    restricted.set_languages(known)
    return restricted


def majority(counts: Mapping[str, int], default: str = FALLBACK_LANG) -> str:
    """The most common language (ties: the alphabetically first); `default` when there is none."""
    ranked = sorted((kv for kv in counts.items() if kv[1] > 0), key=lambda kv: (-kv[1], kv[0]))
    return ranked[0][0] if ranked else default


@dataclass(frozen=True)
class LanguageDetector:
    """Chooses among `languages`; `default` when the text is short or the guess unsure."""

    languages: tuple[str, ...]
    default: str
    min_confidence: float
    min_chars: int

    @classmethod
    def for_text(cls, config: TextConfig, languages: Iterable[str], default: str) -> LanguageDetector:
        """A detector with `config`'s thresholds over `languages` (the model is loaded on the first guess)."""
        return cls(
            languages=tuple(sorted(set(languages))), default=config.default_lang or default,
            min_confidence=config.detect_min_confidence, min_chars=config.detect_min_chars,
        )

    @classmethod
    def for_index(cls, config: TextConfig, counts: Mapping[str, int]) -> LanguageDetector:
        """A built index's (drafts, updates): its languages (the configured ones while it holds none), and
        `text.default_lang` or its majority as the default."""
        return cls.for_text(config, counts or config.languages, majority(counts))

    def guess(self, text: str) -> str | None:
        """A confident guess among `languages`, or None."""
        if len(self.languages) <= 1:
            return self.languages[0] if self.languages else None
        if len(text.strip()) < self.min_chars:
            return None
        identifier = _identifier(self.languages)
        if identifier is None:
            return None
        lang, confidence = identifier.classify(text[:DETECT_CHARS])
        return lang if confidence >= self.min_confidence else None

    def detect(self, text: str) -> str:
        return self.guess(text) or self.default


def assign_languages(declared: list[str | None], texts: Iterable[str], config: TextConfig) -> list[str]:
    """Every record's language at build time: its own, else a guess among the configured and the declared
    languages, else `text.default_lang`, else the majority of the languages declared or guessed."""
    detector = LanguageDetector.for_text(config, (*config.languages, *filter(None, declared)), FALLBACK_LANG)
    guesses = [lang or detector.guess(text) for lang, text in zip(declared, texts)]
    default = config.default_lang or majority(Counter(filter(None, guesses)))
    return [lang or default for lang in guesses]


def detect_language(text: str, default: str, languages: Iterable[str] = SUPPORTED_LANGUAGES) -> str:
    """One text's language among `languages` with the default thresholds (used where no index is at hand)."""
    return LanguageDetector.for_text(TextConfig(), languages, default).detect(text)
