"""SimHash signatures: the same for a row however it is computed, and a screen that keeps copies."""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import normalize

from index.simhash import BITS, max_bits, signatures


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b))


def at_cosine(a: sp.csr_matrix, other: sp.csr_matrix, cosine: float) -> sp.csr_matrix:
    """A unit row at exactly `cosine` to unit row `a`, in the plane of `a` and `other`."""
    a, other = a.toarray()[0], other.toarray()[0]
    orthogonal = other - (other @ a) * a
    orthogonal /= np.linalg.norm(orthogonal)
    return sp.csr_matrix(cosine * a + math.sqrt(1 - cosine**2) * orthogonal, dtype=np.float32)


def random_rows(seed: int, n: int, terms: int = 2_000, density: float = 0.05) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    matrix = sp.random(n, terms, density=density, format="csr", dtype=np.float32, random_state=rng)
    return normalize(matrix).astype(np.float32).tocsr()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1_000), pick=st.lists(st.integers(0, 49), min_size=1, max_size=10))
def test_a_row_has_the_same_signature_alone_or_among_all(seed, pick):
    """Updates and drafts compute signatures of a few rows; they must match the build's."""
    rows = random_rows(seed, 50)
    assert np.array_equal(signatures(rows[pick]), signatures(rows)[pick])


def test_identical_rows_have_identical_signatures_and_empty_rows_all_zero_bits():
    rows = random_rows(1, 3)
    both = sp.vstack([rows[0], rows[0], sp.csr_matrix((1, rows.shape[1]), dtype=np.float32)]).tocsr()
    got = signatures(both)
    assert np.array_equal(got[0], got[1])
    assert not got[2].any()


def test_hamming_distance_follows_the_angle():
    """Bits differ with probability angle/pi: the mean over many pairs is close to BITS * angle / pi."""
    base = random_rows(2, 200)
    for cosine in (0.995, 0.98, 0.7):
        distances = []
        for i in range(0, 200, 2):
            pair = sp.vstack([base[i], at_cosine(base[i], base[i + 1], cosine)]).tocsr()
            s = signatures(pair)
            distances.append(hamming(s[0], s[1]))
        expected = BITS * math.acos(cosine) / math.pi
        assert abs(np.mean(distances) - expected) < 0.15 * expected + 1
        assert max(distances) <= max_bits(cosine)  # the screen lets every such pair through


def test_screen_distance_grows_as_copies_get_looser():
    assert max_bits(0.999) < max_bits(0.995) < max_bits(0.98) < max_bits(0.5) <= BITS
    assert max_bits(0.995) < BITS * math.acos(0.8) / math.pi  # a merely related pair (0.8) rarely passes
