"""The native backend is explicit (issue 17, item 1).

fr_lib's loss and layer files run their MXNet formulas as written; only
``fr_lib.native.to_native`` puts the native operators in, block by block,
and the native forms agree with the formulas to float32 rounding.
"""
import ast
import json
import pathlib
import warnings

import mxnet as mx
import numpy as np
import pytest

import fr_lib
from fr_lib import ops
from fr_lib.loss import (AdaFaceLoss, ArcFaceLoss, CircleLoss, CombinedMarginLoss,
                         CosFaceLoss, CurricularFaceLoss, MagFaceLoss, NormFaceLoss,
                         SphereFaceLoss, SubCenterArcFaceLoss)
from fr_lib.model_zoo import PReLU, get_model
from fr_lib.native import (check_engine, mxnet_engine, native_blocks, resolve_engine,
                           to_mxnet, to_native)

SRC = pathlib.Path(fr_lib.__file__).parent
needs_native = pytest.mark.skipif(not ops.available(),
                                  reason="fr_lib native operators unavailable")


def _graph_ops(block, *inputs):
    block.hybridize()
    block(*inputs)
    return {n["op"] for n in json.loads(block._cached_graph[1].tojson())["nodes"]}


def _fr_calls(path):
    """Names ``fr_*`` used as attributes anywhere in a source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return sorted({n.attr for n in ast.walk(tree)
                   if isinstance(n, ast.Attribute) and n.attr.startswith("fr_")}
                  | {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                     and n.attr in ("use_native", "native_ops")})


@pytest.mark.parametrize("rel", ["loss/margin.py", "loss/advanced.py",
                                 "loss/quality.py", "loss/_margin_ops.py",
                                 "loss/metric.py", "loss/regularizer.py",
                                 "loss/embedding.py",
                                 "model_zoo/layers.py", "model_zoo/inference.py",
                                 "model_zoo/mobilefacenet.py", "model_zoo/iresnet.py"])
def test_formula_files_name_no_native_operator(rel):
    """The files the book reads as the maths never reach for a native operator
    or a global native switch: what they say is what runs."""
    assert _fr_calls(SRC / rel) == []


def _losses():
    rng = np.random.RandomState(0)
    cos = mx.nd.array(rng.uniform(-0.9, 0.9, (6, 5)))
    cos3 = mx.nd.array(rng.uniform(-0.9, 0.9, (6, 15)))
    label = mx.nd.array(rng.randint(0, 5, 6))
    norm = mx.nd.array(rng.uniform(15, 90, 6))
    return [(NormFaceLoss, {}, (cos, label)), (CosFaceLoss, {}, (cos, label)),
            (ArcFaceLoss, {}, (cos, label)), (CombinedMarginLoss, {}, (cos, label)),
            (SphereFaceLoss, {"s": 16.0}, (cos, label)),
            (SubCenterArcFaceLoss, {"k": 3}, (cos3, label)),
            (CurricularFaceLoss, {}, (cos, label)), (CircleLoss, {}, (cos, label)),
            (MagFaceLoss, {}, (cos, label, norm)), (AdaFaceLoss, {}, (cos, label, norm))]


@pytest.mark.parametrize("cls, kwargs, inputs", _losses(),
                         ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_loss_traces_its_formula_until_converted(cls, kwargs, inputs):
    loss = cls(**kwargs)
    assert not any(op.startswith("fr_") for op in _graph_ops(loss, *inputs))
    assert not native_blocks(loss)


@needs_native
@pytest.mark.parametrize("cls, kwargs, inputs", _losses(),
                         ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_native_loss_matches_formula(cls, kwargs, inputs):
    """Value and gradient of the native form vs the MXNet formula (float32),
    imperative and hybridized; then back to the formula."""
    results = []
    for native in (False, True, False):
        loss = cls(**kwargs)
        if native:
            to_native(loss, "native")
            assert isinstance(loss, cls) and native_blocks(loss) == [loss]
        cos = inputs[0].copy()
        cos.attach_grad()
        with mx.autograd.record():
            out = loss(cos, *inputs[1:])
        out.backward()
        results.append((out.asnumpy(), cos.grad.asnumpy()))
        if native:
            fr = {op for op in _graph_ops(loss, *inputs) if op.startswith("fr_")}
            assert fr == {"fr_margin_ce"}
            to_mxnet(loss)
            assert type(loss) is cls
            assert not any(op.startswith("fr_") for op in _graph_ops(loss, *inputs))
    (v0, g0), (v1, g1), (v2, g2) = results
    np.testing.assert_allclose(v1, v0, rtol=1e-5, atol=1e-5 * np.abs(v0).max())
    np.testing.assert_allclose(g1, g0, rtol=1e-4, atol=1e-5 * np.abs(g0).max())
    np.testing.assert_array_equal(v2, v0)


@needs_native
def test_network_conversion_is_block_level_and_reversible():
    net = get_model("mobilefacenet", embedding_size=16)
    net.initialize()
    x = mx.nd.random.uniform(-1, 1, (2, 3, 112, 112))
    plain_ops = _graph_ops(net, x)
    ref = net(x).asnumpy()
    assert not any(op.startswith("fr_") for op in plain_ops)
    prelus = []
    net.apply(lambda b: prelus.append(b) if isinstance(b, PReLU) else None)
    to_native(net)                       # 'auto' on CPU: native
    assert native_blocks(net) == prelus and all(isinstance(b, PReLU) for b in prelus)
    assert "fr_prelu" in _graph_ops(net, x)
    np.testing.assert_allclose(net(x).asnumpy(), ref, rtol=1e-5, atol=1e-5)
    with mxnet_engine(net):
        assert not any(op.startswith("fr_") for op in _graph_ops(net, x))
    assert len(native_blocks(net)) == len(prelus)
    to_mxnet(net)
    assert not native_blocks(net)
    assert all(type(b) is PReLU for b in prelus)


def test_engine_vocabulary():
    assert [check_engine(e) for e in ("auto", "NATIVE", "mxnet")] == \
        ["auto", "native", "mxnet"]
    with pytest.warns(DeprecationWarning, match="engine='native'"):
        assert check_engine("fused") == "native"
    with pytest.raises(ValueError, match="'auto', 'native' or 'mxnet'"):
        check_engine("tensorrt")
    assert resolve_engine("mxnet") == ("mxnet", "engine='mxnet'")
    # a GPU context rules the native operators out, whatever the machine has
    engine, why = resolve_engine("auto", [mx.gpu(0)])
    assert engine == "mxnet" and "CPU only" in why
    with pytest.raises(ValueError, match="engine='native' cannot be used: .*CPU only"):
        resolve_engine("native", [mx.gpu(0)])
    loss = ArcFaceLoss()
    assert to_native(loss, "mxnet") is loss and not native_blocks(loss)
    assert to_native(loss, "auto", [mx.gpu(0)]) is loss and not native_blocks(loss)
    # the device argument is ctx, as everywhere; contexts= still works, warning
    assert resolve_engine("auto", ctx=[mx.gpu(0)])[0] == "mxnet"
    with pytest.warns(DeprecationWarning, match=r"contexts=\.\.\.\) is now ctx"):
        assert resolve_engine("auto", contexts=[mx.gpu(0)])[0] == "mxnet"
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="not both"):
        to_native(loss, "auto", ctx=[mx.gpu(0)], contexts=[mx.gpu(0)])


def test_global_switch_is_gone():
    with pytest.raises(RuntimeError, match="to_native"):
        ops.native_ops(False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert ops.use_native() == ops.available()
    assert any(issubclass(w.category, DeprecationWarning) for w in seen)
