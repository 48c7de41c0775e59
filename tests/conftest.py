import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))


@pytest.fixture(scope="session")
def root():
    return ROOT


_ENGINE = {"mode": "fallback"}


@pytest.fixture(params=["native", "fallback"])
def native_mode(request):
    """Run a test with fr_lib's native CPU forms of its blocks and with the
    MXNet formulas they replace (both must match the independent
    references). The test converts the blocks it builds with
    :func:`engine_block`; fr_lib itself has no global switch."""
    from fr_lib import ops
    if request.param == "native" and not ops.available():
        pytest.skip("fr_lib native operators unavailable (no C++ compiler?)")
    _ENGINE["mode"] = request.param
    try:
        yield request.param
    finally:
        _ENGINE["mode"] = "fallback"


def engine_block(block):
    """``block`` converted to its native form when the running test is in
    the fixture's ``'native'`` mode, else unchanged."""
    if _ENGINE["mode"] == "native":
        from fr_lib.native import to_native
        to_native(block, "native")
    return block
