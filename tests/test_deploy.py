"""fr_lib.deploy: symbol export, ONNX export + onnxruntime, the face verifier."""
import os
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fr_lib  # noqa: F401  (MXNet compatibility fixes first)
import mxnet as mx
from mxnet.gluon import nn

from fr_lib import deploy
from fr_lib.data import ARCFACE_TEMPLATE, apply_transform, normalize_batch
from fr_lib.model_zoo import get_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _randomize(net, seed):
    """Non-trivial inference statistics: BN running mean/var and gamma,
    PReLU slopes, so that every layer's parameters matter in the check."""
    rng = np.random.RandomState(seed)
    for name, p in net.collect_params().items():
        shape = p.shape
        if name.endswith("running_mean"):
            p.set_data(mx.nd.array(rng.normal(0, 0.1, shape)))
        elif name.endswith("running_var"):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, shape)))
        elif name.endswith("gamma") and p.grad_req != "null":
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, shape)))
        elif name.endswith("beta"):
            p.set_data(mx.nd.array(rng.normal(0, 0.1, shape)))
        elif name.endswith("alpha"):
            p.set_data(mx.nd.array(rng.uniform(0.0, 0.5, shape)))


def _net(name, seed=0, **kwargs):
    mx.random.seed(seed)
    net = get_model(name, **kwargs)
    net.initialize(mx.init.Xavier())
    _randomize(net, seed)
    return net


def _faces(n, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, 112, 112, 3)) \
        .astype(np.uint8)


def _reference(net, faces, flip=True):
    """NumPy reference of the embedding: normalise, (flip-sum), L2-normalise."""
    x = (faces.astype(np.float32).transpose(0, 3, 1, 2) - 127.5) / 128
    f = net(mx.nd.array(x)).asnumpy()
    if flip:
        f = f + net(mx.nd.array(x[:, :, :, ::-1].copy())).asnumpy()
    return f / np.linalg.norm(f, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def mbf(tmp_path_factory):
    """A MobileFaceNet (BN, PReLU) exported once for the module."""
    net = _net("mobilefacenet")
    prefix = str(tmp_path_factory.mktemp("mbf") / "mobilefacenet")
    deploy.export_model(net, prefix)
    return net, prefix


def test_export_and_load_give_identical_embeddings(mbf):
    net, prefix = mbf
    folder = os.path.dirname(prefix)
    assert sorted(os.listdir(folder)) == ["mobilefacenet-0000.params",
                                          "mobilefacenet-symbol.json"]
    loaded = deploy.load_exported(prefix)
    assert isinstance(loaded, mx.gluon.SymbolBlock)
    x = normalize_batch(_faces(2))
    assert_allclose(loaded(mx.nd.array(x)).asnumpy(),
                    net(mx.nd.array(x)).asnumpy(), rtol=0, atol=1e-6)
    faces = _faces(2, 1)
    assert_allclose(deploy.MXNetEmbedder(prefix)(faces), _reference(net, faces),
                    rtol=0, atol=1e-6)


def test_load_exported_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-symbol.json"):
        deploy.load_exported(str(tmp_path / "nothing"))


@pytest.mark.parametrize("name, kwargs", [
    ("mobilefacenet", {}),
    # a narrower embedding keeps the FC (and the test) small; dropout must be
    # a no-op at inference, in MXNet and in the exported graph
    ("iresnet18", {"embedding_size": 128, "dropout": 0.4}),
])
def test_onnx_embeddings_match_mxnet(tmp_path, name, kwargs):
    net = _net(name, seed=1, **kwargs)
    path = deploy.export_onnx(net, str(tmp_path / f"{name}.onnx"))
    model = onnx.load(path)
    assert model.opset_import[0].version == 13
    assert [i.name for i in model.graph.input] == ["data"]  # weights not inputs
    faces = _faces(2, 2)
    emb = deploy.OnnxEmbedder(path, num_threads=1)(faces)
    assert emb.shape == (2, net.embedding_size)
    assert_allclose(np.linalg.norm(emb, axis=1), 1, rtol=1e-5)
    assert_allclose(emb, _reference(net, faces), rtol=0, atol=1e-4)
    # the raw outputs agree as well (relative to their scale)
    x = normalize_batch(faces)
    raw = net(mx.nd.array(x)).asnumpy()
    got = deploy.OnnxEmbedder(path).features(x)
    assert np.abs(got - raw).max() <= 1e-4 * max(1.0, np.abs(raw).max())


def test_onnx_compat_restores_onnx_and_exports_twice(mbf, tmp_path):
    net, prefix = mbf
    had_mapping = "mapping" in onnx.__dict__
    version = onnx.defs.onnx_opset_version()
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    before = {v: dict(ops) for v, ops in MXNetGraph.registry_.items()}
    first = deploy.export_onnx(prefix, str(tmp_path / "a.onnx"))
    assert ("mapping" in onnx.__dict__) == had_mapping
    assert onnx.defs.onnx_opset_version() == version
    assert {v: dict(ops) for v, ops in MXNetGraph.registry_.items()} == before
    # restored also when the export fails inside the block
    with pytest.raises(RuntimeError, match="boom"):
        with deploy.onnx_compat():
            assert onnx.defs.onnx_opset_version() == 13
            import onnx.mapping as m
            assert m.NP_TYPE_TO_TENSOR_TYPE[np.dtype("float32")] == \
                onnx.TensorProto.FLOAT
            raise RuntimeError("boom")
    assert onnx.defs.onnx_opset_version() == version
    second = deploy.export_onnx(prefix, str(tmp_path / "b.onnx"), opset=12)
    faces = _faces(2, 3)
    e1 = deploy.OnnxEmbedder(first)(faces)
    e2 = deploy.OnnxEmbedder(second)(faces)
    assert_allclose(e1, e2, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="opset 12 or 13"):
        deploy.export_onnx(prefix, str(tmp_path / "c.onnx"), opset=17)


def test_fixed_batch_model_is_fed_padded_batches(mbf, tmp_path):
    net, prefix = mbf
    path = deploy.export_onnx(prefix, str(tmp_path / "fixed.onnx"),
                              input_shape=(2, 3, 112, 112), dynamic_batch=False)
    embedder = deploy.OnnxEmbedder(path, flip=False)
    assert embedder.fixed_batch == 2
    faces = _faces(3, 4)  # one full batch and one padded
    assert_allclose(embedder(faces), _reference(net, faces, flip=False),
                    rtol=0, atol=1e-4)


class _Reversed(nn.HybridBlock):
    """scalar - x and scalar / x, the two operators MXNet exported reversed."""

    def hybrid_forward(self, F, x):
        return (1 - x) + 2 / (x * x + 1)


def test_reversed_scalar_operators_export_correctly(tmp_path):
    net = _Reversed()
    net.initialize()
    path = deploy.export_onnx(net, str(tmp_path / "r.onnx"), input_shape=(2, 3))
    x = np.array([[0.5, -1.0, 2.0], [0.0, 3.0, -0.25]], np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"data": x})[0]
    assert_allclose(got, (1 - x) + 2 / (x * x + 1), rtol=1e-6)


def test_gluon_prelu_is_refused_with_advice(tmp_path):
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, in_channels=3), nn.PReLU(in_channels=4))
    net.initialize()
    with pytest.raises(ValueError, match="fast_prelu=True"):
        deploy.export_onnx(net, str(tmp_path / "p.onnx"), input_shape=(1, 3, 8, 8))


def test_missing_onnxruntime_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match="pip install onnxruntime=="):
        deploy.OnnxEmbedder(str(tmp_path / "m.onnx"))
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="pip install onnx=="):
        deploy.require_onnx()


def test_embedder_rejects_unaligned_input(mbf):
    embedder = deploy.MXNetEmbedder(mbf[0])
    with pytest.raises(ValueError, match="112, 112, 3"):
        embedder(np.zeros((2, 100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        embedder(np.zeros((112, 112, 3), np.float32))


def test_verifier_detects_and_aligns_the_astronaut(mbf):
    skdata = pytest.importorskip("skimage.data")
    photo = skdata.astronaut()
    verifier = deploy.FaceVerifier(deploy.MXNetEmbedder(mbf[0]), threshold=1.0)
    aligned = verifier.align(photo, "astronaut")
    x, y, w, h = aligned.box
    # the face of Eileen Collins: upper middle of the 512x512 photo
    assert 150 < x + w / 2 < 250 and 50 < y + h / 2 < 150 and w > 60
    assert aligned.face.shape == (112, 112, 3) and aligned.face.dtype == np.uint8
    # the two eye centres land on the template's eyes
    assert_allclose(apply_transform(aligned.matrix, aligned.eyes),
                    ARCFACE_TEMPLATE[:2], atol=1e-6)
    result = verifier.verify(photo, photo[:, ::-1].copy())
    assert 0 <= result.distance <= 4
    assert_allclose(result.cosine, 1 - result.distance / 2, atol=1e-9)
    assert result.same == (result.distance < 1.0)
    assert verifier.compare(*[verifier.embed(photo)[1]] * 2).distance < 1e-6


def test_verifier_names_the_image_without_a_face(mbf):
    verifier = deploy.FaceVerifier(deploy.MXNetEmbedder(mbf[0]))
    blank = np.full((200, 200, 3), 128, np.uint8)
    with pytest.raises(deploy.NoFaceError, match="no face found in blank.png"):
        verifier.align(blank, "blank.png")
    with pytest.raises(ValueError, match="threshold"):
        deploy.FaceVerifier(verifier.embedder, threshold=5)
