"""Registries: every entry builds, names are case-insensitive, errors list names."""
import mxnet as mx
import numpy as np
import pytest

import fr_lib
from fr_lib.utils import Registry


@pytest.mark.parametrize("name", fr_lib.get_model_list())
def test_every_model_builds(name):
    # Building and shape inference only: tests/test_model_zoo.py runs every
    # model forward, so the registry test stays cheap.
    net = fr_lib.get_model(name)
    net.initialize()
    shape = (2, 1, 28, 28) if name.startswith("lenet") else (2, 3, 112, 112)
    _, out_shapes, _ = net(mx.sym.var("data")).infer_shape(data=shape)
    assert len(out_shapes) == 1 and out_shapes[0][0] == 2 and len(out_shapes[0]) == 2, name


# How each family is called: cosine-matrix losses take (cos, label), losses
# on raw embeddings take (embeddings, label), pair losses three inputs.
COS = mx.nd.array([[0.9, 0.2, -0.4], [0.1, 0.5, -0.3]])
EMB = mx.nd.array([[1.0, 2.0], [0.5, -1.0]])
LABEL = mx.nd.array([0, 2])
CALLS = {
    "softmax": lambda loss: loss(COS * 5, LABEL),
    "subcenter_arcface": lambda loss: loss(mx.nd.tile(COS, (1, 3)), LABEL),
    "magface": lambda loss: loss(COS, LABEL, mx.nd.array([20.0, 60.0])),
    "adaface": lambda loss: loss(COS, LABEL, mx.nd.array([20.0, 60.0])),
    "contrastive": lambda loss: loss(EMB, EMB[::-1], mx.nd.array([1, 0])),
    "contrastive_batch": lambda loss: loss(EMB, LABEL),
    "triplet": lambda loss: loss(EMB, LABEL),
    "ring": lambda loss: loss(EMB),
}
NEEDS_CLASSES = {"l2softmax", "center", "lgm"}
COSINE = {"normface", "cosface", "amsoftmax", "arcface", "combined", "sphereface",
          "asoftmax", "curricularface", "circle"}


@pytest.mark.parametrize("name", fr_lib.get_loss_list())
def test_every_loss_builds_and_runs(name):
    kwargs = {"num_classes": 3} if name in NEEDS_CLASSES else {}
    loss = fr_lib.get_loss(name, **kwargs)
    loss.initialize()  # no-op for losses without parameters
    if name in CALLS:
        value = CALLS[name](loss)
    elif name in COSINE:
        value = loss(COS, LABEL)
    elif name in NEEDS_CLASSES:
        value = loss(EMB, LABEL)
    else:
        pytest.fail(f"loss '{name}' is registered but this test does not know "
                    "how to call it: add it to CALLS or a family set")
    assert np.isfinite(value.asnumpy()).all(), name


def test_softmax_loss_matches_hand_calculation():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    labels = np.array([0, 2])
    expected = [np.log(np.exp(logits[0]).sum()) - 2.0, np.log(3.0)]
    got = fr_lib.get_loss("softmax")(mx.nd.array(logits, dtype="float64"),
                                     mx.nd.array(labels, dtype="float64"))
    np.testing.assert_allclose(got.asnumpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("getter, kind", [(fr_lib.get_model, "model"),
                                          (fr_lib.get_loss, "loss")])
def test_unknown_name_lists_valid_names(getter, kind):
    with pytest.raises(ValueError) as info:
        getter("no-such-thing")
    message = str(info.value)
    assert f"unknown {kind} 'no-such-thing'" in message
    names = fr_lib.get_model_list() if kind == "model" else fr_lib.get_loss_list()
    for name in names:
        assert name in message


def test_names_are_case_insensitive():
    assert type(fr_lib.get_model("LeNetPP")) is type(fr_lib.get_model("lenetpp"))
    assert type(fr_lib.get_loss("SoftMax")) is type(fr_lib.get_loss("softmax"))


def test_registry_rejects_duplicates_and_non_strings():
    reg = Registry("thing")
    reg.register("a")(dict)
    reg.register("A")(dict)  # same object again: fine
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(list)
    with pytest.raises(TypeError):
        reg.lookup(3)
    assert reg.names() == ["a"] and "A" in reg and len(reg) == 1


def test_empty_registry_error_is_readable():
    with pytest.raises(ValueError, match=r"Valid names: \(none registered\)"):
        Registry("thing").create("x")
