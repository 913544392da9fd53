"""Threads for request-time work: one per request, not one team per kernel.

A request ranks one article. FAISS and the numba kernels each bring an OpenMP runtime, and
a parallel region over a single query gains nothing while the two runtimes' spinning
workers delay each other's regions: a 0.1 ms kernel call measured 10-16 ms in a serving
process. Serving threads therefore run every kernel on their own thread; builds, updates
and evaluations keep all cores.
"""
from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import faiss
import numba


def single_threaded_kernels() -> None:
    """For the calling thread (numba's setting is per thread) and FAISS (process-wide)."""
    faiss.omp_set_num_threads(1)
    numba.set_num_threads(1)


@contextmanager
def kernel_threads(n: int) -> Iterator[ThreadPoolExecutor]:
    """`n` threads, each running every kernel on its own thread: a build's batches then keep every
    core busy, where one team per kernel leaves all but one core idle while a batch runs Python and
    numpy between kernels. FAISS's thread count is restored after (it may be process-wide)."""
    before = faiss.omp_get_max_threads()
    try:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="kernels", initializer=single_threaded_kernels) as pool:
            yield pool
    finally:
        faiss.omp_set_num_threads(before)
