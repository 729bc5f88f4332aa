"""Finds the hisa package: an installed one, or the build folder's (HISA_PYTHONPATH, else
build/python of the repository), and gives each test module its random seed, printed so that a
failure can be replayed with HISA_SEED=<seed>."""
import os
import sys

import numpy as np
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BUILT = os.environ.get("HISA_PYTHONPATH", os.path.join(_ROOT, "build", "python"))
if os.path.isdir(os.path.join(_BUILT, "hisa")):
    sys.path.insert(0, _BUILT)


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("HISA_SEED", np.random.SeedSequence().entropy % (2 ** 31)))
    print("%s: seed %d (HISA_SEED=%d replays it)" % (request.node.name, seed, seed))
    return np.random.default_rng(seed)
