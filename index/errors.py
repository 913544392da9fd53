"""Named exceptions for the index package.

Messages are written for an operator reading a log or a CLI error: they name
the version, the file and what to do where that is known.
"""

from __future__ import annotations


class ArtifactError(Exception):
    """Base class: something is wrong with the artifacts under DATA_DIR."""


class CorruptArtifactError(ArtifactError):
    """A version cannot be trusted: checksum mismatch, missing file,
    missing/invalid manifest or an incomplete (never committed) version."""


class BuildLockedError(ArtifactError):
    """Another build or update holds DATA_DIR/build.lock."""


class StorageError(ArtifactError):
    """DATA_DIR cannot be written: the disk is full, the file system is read-only, permission
    is denied. Raised with what was cleaned up, so one line tells an operator the whole story;
    `errno` is the file system's (None: a short write, which numpy reports without one)."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class NoIndexError(ArtifactError):
    """DATA_DIR has no `current` version yet (nothing built or published)."""


class ReadOnlyIndexError(ValueError):
    """An index loaded with mmap=True is a read-only view of its file and
    cannot be appended to; FAISS would abort the whole process instead of
    raising, so we refuse first. Load with mmap=False to update it."""
