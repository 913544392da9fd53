"""SimHash signatures of sparse rows: a constant-cost screen for near-identical vectors.

Each row gets the signs of its projections on BITS random Gaussian hyperplanes (Charikar
2002), packed into WORDS uint64. For two rows at angle θ each bit differs independently with
probability θ/π, so the Hamming distance of the signatures is Binomial(BITS, θ/π). Two copies
(cosine >= 0.98, θ <= 0.2) differ in about 16 bits; two merely related articles (cosine 0.5)
in about 85. A pair is checked exactly only when its distance is within `max_bits` of the
copy threshold, chosen so that a true copy fails the screen with probability below 1e-12:
four popcounts per pair instead of a sparse merge, whatever the corpus looks like (an LSA
bound is only as strong as the share of each row the SVD captures, which is low on a large,
varied archive).

The hyperplane of a term is a pure function of (seed, term id), so a signature is the same
whether computed by a build over every row or by an update or draft over a few.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numba
import numpy as np
import scipy.sparse as sp

BITS = 256
WORDS = BITS // 64
SEED = 0x5EED_51A5
MISS_PROBABILITY = 1e-12  # chance that the screen drops a true copy

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@lru_cache(maxsize=64)
def max_bits(cosine: float, miss: float = MISS_PROBABILITY) -> int:
    """Largest Hamming distance a pair at `cosine` reaches with probability >= `miss` (a screen
    at this distance lets through every pair whose cosine is at least `cosine`, but for `miss`).

    Cached: the binomial tail sum takes about 0.3 ms, and every request-time collapse asks for it."""
    p = math.acos(max(-1.0, min(1.0, cosine))) / math.pi
    tail = 0.0
    for m in range(BITS, -1, -1):  # P(X >= m), summed from the top
        tail += math.comb(BITS, m) * p**m * (1 - p) ** (BITS - m)
        if tail >= miss:
            return m
    return BITS


def signatures(matrix: sp.csr_matrix, seed: int = SEED) -> np.ndarray:
    """[n, WORDS] uint64 signatures of the rows (an empty row: all bits 0)."""
    matrix = matrix.tocsr()
    present = np.zeros(matrix.shape[1], dtype=bool)
    present[matrix.indices] = True
    terms = np.flatnonzero(present)
    slot = np.cumsum(present, dtype=np.int64) - 1  # term id -> row of the hyperplane table
    planes = _hyperplanes(terms.astype(np.uint64), np.uint64(seed))
    return _signatures(
        np.asarray(matrix.indptr, dtype=np.int64), np.asarray(matrix.indices), np.asarray(matrix.data, dtype=np.float32),
        slot, planes,
    )


@numba.njit(cache=True, inline="always")
def _mix(z):  # pragma: no cover - splitmix64's finalizer
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(parallel=True, cache=True)
def _hyperplanes(terms, seed):  # pragma: no cover
    """[len(terms), BITS] float32 standard normals, a pure function of (seed, term): Box-Muller
    on two 32-bit uniforms of a hash."""
    out = np.empty((len(terms), BITS), dtype=np.float32)
    for i in numba.prange(len(terms)):
        base = _mix(terms[i] * _GOLDEN + seed)
        for j in range(BITS // 2):
            h = _mix(base + np.uint64(j + 1) * _GOLDEN)
            u1 = (np.float64(h >> np.uint64(32)) + 1.0) / 4294967296.0  # (0, 1]
            u2 = np.float64(h & np.uint64(0xFFFFFFFF)) / 4294967296.0
            radius = math.sqrt(-2.0 * math.log(u1))
            out[i, 2 * j] = radius * math.cos(2.0 * math.pi * u2)
            out[i, 2 * j + 1] = radius * math.sin(2.0 * math.pi * u2)
    return out


@numba.njit(parallel=True, cache=True)
def _signatures(indptr, indices, data, slot, planes):  # pragma: no cover
    n = len(indptr) - 1
    out = np.zeros((n, WORDS), dtype=np.uint64)
    for r in numba.prange(n):
        acc = np.zeros(BITS, dtype=np.float32)
        for p in range(indptr[r], indptr[r + 1]):
            plane = planes[slot[indices[p]]]
            w = data[p]
            for b in range(BITS):
                acc[b] += w * plane[b]
        for b in range(BITS):
            if acc[b] > 0:
                out[r, b >> 6] |= np.uint64(1) << np.uint64(b & 63)
    return out


@numba.njit(cache=True, inline="always")
def _popcount(x):  # pragma: no cover - SWAR bit count of a uint64
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@numba.njit(cache=True, inline="always")
def distance(a, b):  # pragma: no cover
    """Hamming distance of two signatures (uint64[WORDS] each)."""
    total = 0
    for w in range(WORDS):
        total += _popcount(a[w] ^ b[w])
    return total
