"""The selection rule in float64 NumPy, written independently of the library as the oracle of the
model's cross-checks (selftest.py, fixture_eval.py; SEMANTICS.md sections 3-4)."""
import numpy as np


def top_lower(scores, pos, n):
    """The n best positions (scores desc, ties toward the lower position). pos ascending."""
    order = np.lexsort((pos, -scores))
    return pos[order[:n]]


def choose_blocks(J, e, B, m, sink=1, local=1):
    nblk = (e + B - 1) // B
    if nblk <= m:
        return np.arange(nblk)
    others = np.arange(sink, nblk - local)
    best = top_lower(J[others], others, m - sink - local)
    return np.sort(np.concatenate([np.arange(sink), best, np.arange(nblk - local, nblk)]))
