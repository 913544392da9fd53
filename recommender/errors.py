"""Errors the user can act on, as opposed to bugs."""
from __future__ import annotations


class RelatedError(Exception):
    """Base for user-facing errors: the CLI prints str(e) and exits 1, never a traceback."""


class SourceError(RelatedError):
    """The source file as a whole is unusable: missing, unreadable, unknown format, CSV without header.

    Problems with single records are not errors but rejects (see recommender.pipeline.articles.Reject).
    """


class ArticleNotFoundError(RelatedError):
    """The requested article id is not in the loaded index version (or was deleted)."""


class RejectedRecords(RelatedError):
    """Records of a source were rejected and the caller's limit on rejects refuses the whole source.

    `rejects` holds each one (pipeline.articles.Reject: line, id, reason), for a caller to show them all.
    """

    def __init__(self, message: str, rejects: list) -> None:
        super().__init__(message)
        self.rejects = rejects
