import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(params=["native", "fallback"])
def native_mode(request):
    """Run a test with fr_lib's native CPU operators and with the pure-MXNet
    formulas they replace (both must match the independent references)."""
    from fr_lib import ops
    if request.param == "native" and not ops.available():
        pytest.skip("fr_lib native operators unavailable (no C++ compiler?)")
    with ops.native_ops(request.param == "native"):
        yield request.param
