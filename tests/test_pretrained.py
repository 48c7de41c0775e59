"""fr_lib.model_zoo.pretrained: InsightFace's .pth and .onnx weights.

Fixtures are generated here, never downloaded:

- a state dict named exactly as arcface_torch's ``backbones/iresnet.py`` and
  ``backbones/mobilefacenet.py`` name their parameters, with random weights;
- its ``backbone.pth``, written the way ``torch.save`` writes it (a zip with
  ``<name>/data.pkl`` -- protocol 2, ``torch._utils._rebuild_tensor_v2`` on
  ``('storage', torch.FloatStorage, key, 'cpu', numel)`` persistent ids --
  and ``<name>/data/<key>``), the pickle written opcode by opcode;
- the InsightFace forward pass of that state dict as an ONNX graph, once
  as PyTorch semantics (BatchNorm eps 1e-5, separate BN nodes) and once as
  ``torch.onnx.export`` writes it (BN after a conv folded into the conv,
  numeric initialiser names, ``input.1``).

onnxruntime runs the graphs; the fr_lib network loaded from the files must
give the same embeddings.
"""
import os
import struct
import zipfile

import mxnet as mx
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fr_lib.model_zoo import get_model  # noqa: E402
from fr_lib.model_zoo.pretrained import (INSIGHTFACE_URL, insightface_file,  # noqa: E402
                                         load_insightface_weights, read_pth)


# ------------------------------------------------- InsightFace networks ----

class _Net:
    """A state dict plus the program of InsightFace's forward pass."""

    def __init__(self, seed):
        self.rng = np.random.RandomState(seed)
        self.sd, self.prog = {}, []

    def conv(self, key, cin, cout, k, stride=1, pad=0, groups=1):
        fan = cin // groups * k * k
        self.sd[key + ".weight"] = self.rng.normal(
            0, np.sqrt(1.0 / fan), (cout, cin // groups, k, k)).astype(np.float32)
        self.prog.append(("conv", key, stride, pad, groups))

    def bn(self, key, c, affine=True, var=(0.5, 1.5)):
        r = self.rng
        if affine:
            self.sd[key + ".weight"] = r.uniform(0.5, 1.5, c).astype(np.float32)
        else:
            self.sd[key + ".weight"] = np.ones(c, np.float32)
        self.sd[key + ".bias"] = r.uniform(-0.2, 0.2, c).astype(np.float32)
        self.sd[key + ".running_mean"] = r.uniform(-0.2, 0.2, c).astype(np.float32)
        self.sd[key + ".running_var"] = r.uniform(*var, c).astype(np.float32)
        self.sd[key + ".num_batches_tracked"] = np.array(7, np.int64)
        self.prog.append(("bn", key))

    def prelu(self, key, c):
        self.sd[key + ".weight"] = self.rng.uniform(0.1, 0.4, c).astype(np.float32)
        self.prog.append(("prelu", key))

    def linear(self, key, cin, cout, bias=True):
        self.sd[key + ".weight"] = self.rng.normal(
            0, np.sqrt(1.0 / cin), (cout, cin)).astype(np.float32)
        if bias:
            self.sd[key + ".bias"] = self.rng.uniform(-0.1, 0.1, cout).astype(np.float32)
        self.prog.append(("flatten",))
        self.prog.append(("linear", key, bias))


def insightface_iresnet(units, num_features, seed=0):
    """arcface_torch backbones/iresnet.py, parameter for parameter."""
    n = _Net(seed)
    n.conv("conv1", 3, 64, 3, 1, 1)
    n.bn("bn1", 64)
    n.prelu("prelu", 64)
    inplanes = 64
    for li, (blocks, planes) in enumerate(zip(units, [64, 128, 256, 512])):
        for b in range(blocks):
            p, stride = f"layer{li + 1}.{b}", 2 if b == 0 else 1
            n.prog.append(("save",))
            n.bn(p + ".bn1", inplanes)
            n.conv(p + ".conv1", inplanes, planes, 3, 1, 1)
            n.bn(p + ".bn2", planes)
            n.prelu(p + ".prelu", planes)
            n.conv(p + ".conv2", planes, planes, 3, stride, 1)
            n.bn(p + ".bn3", planes)
            if b == 0:
                n.prog.append(("branch",))
                n.conv(p + ".downsample.0", inplanes, planes, 1, stride, 0)
                n.bn(p + ".downsample.1", planes)
            n.prog.append(("add",))
            inplanes = planes
    n.bn("bn2", 512)
    n.linear("fc", 512 * 49, num_features)
    # weight fixed at 1.0; variances as small as trained nets have, where
    # BatchNorm's epsilon (torch 1e-5, fr_lib 2e-5) matters
    n.bn("features", num_features, affine=False, var=(2e-5, 1e-4))
    return n


def insightface_mbf(seed=0, num_features=512):
    """arcface_torch backbones/mobilefacenet.py, MobileFaceNet(scale=2,
    blocks=(1, 4, 6, 2))."""
    n = _Net(seed)

    def block(key, cin, cout, k, s, p, g, act=True):
        n.conv(key + ".layers.0", cin, cout, k, s, p, g)
        n.bn(key + ".layers.1", cout)
        if act:
            n.prelu(key + ".layers.2", cout)

    def depthwise(key, cin, cout, s, groups, residual):
        if residual:
            n.prog.append(("save",))
        block(key + ".layers.0", cin, groups, 1, 1, 0, 1)
        block(key + ".layers.1", groups, groups, 3, s, 1, groups)
        block(key + ".layers.2", groups, cout, 1, 1, 0, 1, act=False)
        if residual:
            n.prog.append(("add_identity",))

    block("layers.0", 3, 128, 3, 2, 1, 1)
    block("layers.1", 128, 128, 3, 1, 1, 64)
    depthwise("layers.2", 128, 128, 2, 128, False)
    for i in range(4):
        depthwise(f"layers.3.layers.{i}", 128, 128, 1, 128, True)
    depthwise("layers.4", 128, 256, 2, 256, False)
    for i in range(6):
        depthwise(f"layers.5.layers.{i}", 256, 256, 1, 256, True)
    depthwise("layers.6", 256, 256, 2, 512, False)
    for i in range(2):
        depthwise(f"layers.7.layers.{i}", 256, 256, 1, 256, True)
    block("conv_sep", 256, 512, 1, 1, 0, 1)
    block("features.layers.0", 512, 512, 7, 1, 0, 512, act=False)
    n.linear("features.layers.2", 512, num_features, bias=False)
    # BatchNorm1d with a learned weight (fr_lib keeps gamma at 1)
    n.bn("features.layers.3", num_features, var=(2e-5, 1e-4))
    return n


# ------------------------------------------------------------- writers ----

def _pickle_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _pickle_int(v):
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)
    return b"J" + struct.pack("<i", v)


def _pickle_tuple(items):
    return b"(" + b"".join(items) + b"t"


def write_pth(sd, path, archive="backbone"):
    """torch.save(state_dict, path) without torch: zip format, protocol 2."""
    out = [b"\x80\x02", b"ccollections\nOrderedDict\nq\x00)Rq\x01("]
    storages = []
    for key, arr in sd.items():
        arr = np.array(arr, order="C")  # (ascontiguousarray makes 0-d 1-d)
        kind = {np.dtype(np.float32): "FloatStorage",
                np.dtype(np.float16): "HalfStorage",
                np.dtype(np.int64): "LongStorage"}[arr.dtype]
        sid = str(len(storages))
        storages.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        stride = [int(s // arr.itemsize) for s in arr.strides]
        out.append(_pickle_str(key))
        out.append(b"ctorch._utils\n_rebuild_tensor_v2\n")
        persistent = _pickle_tuple([_pickle_str("storage"),
                                    b"ctorch\n" + kind.encode() + b"\n",
                                    _pickle_str(sid), _pickle_str("cpu"),
                                    _pickle_int(arr.size)]) + b"Q"
        args = [persistent, _pickle_int(0),
                _pickle_tuple([_pickle_int(d) for d in arr.shape]),
                _pickle_tuple([_pickle_int(d) for d in stride]),
                b"\x89", b"ccollections\nOrderedDict\n)R"]
        out.append(_pickle_tuple(args) + b"R")
    out.append(b"u}" + _pickle_str("_metadata") + b"ccollections\nOrderedDict\n)R"
               + b"sb.")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", b"".join(out))
        zf.writestr(f"{archive}/byteorder", b"little")
        for i, raw in enumerate(storages):
            zf.writestr(f"{archive}/data/{i}", raw)
        zf.writestr(f"{archive}/version", b"3\n")
    return path


def write_onnx(net, path, fold_bn, matmul=False, normalise=False):
    """InsightFace's forward pass as ONNX; ``fold_bn`` as torch.onnx.export.

    ``matmul``: linear layers as MatMul (+ Add for a bias) on a transposed
    weight and the flatten as Reshape, as other exporters write them;
    ``normalise``: the graph starts with (x - 127.5) * (1/127.5)."""
    sd, prog = net.sd, net.prog
    nodes, inits, counter = [], [], [600]

    def fresh(prefix="onnx::"):
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    x, saved, i = "input.1", [], 0
    if normalise:
        nodes.append(helper.make_node("Sub", [x, const("mean", 127.5)], ["sub"]))
        nodes.append(helper.make_node("Mul", ["sub", const("std", 1 / 127.5)], ["mul"]))
        x = "mul"
    while i < len(prog):
        op = prog[i]
        y = fresh("")
        if op[0] == "conv":
            _, key, s, p, g = op
            w = sd[key + ".weight"]
            nxt = prog[i + 1] if i + 1 < len(prog) else None
            if fold_bn and nxt is not None and nxt[0] == "bn":
                b = nxt[1]
                scale = sd[b + ".weight"] / np.sqrt(sd[b + ".running_var"] + 1e-5)
                ins = [x, const(fresh("onnx::Conv_"), w * scale[:, None, None, None]),
                       const(fresh("onnx::Conv_"),
                             sd[b + ".bias"] - sd[b + ".running_mean"] * scale)]
                i += 1
            else:
                ins = [x, const(key + ".weight", w)]
            k = w.shape[-1]
            nodes.append(helper.make_node("Conv", ins, [y], name=f"Conv_{len(nodes)}",
                                          kernel_shape=[k, k], strides=[s, s],
                                          pads=[p] * 4, group=g))
        elif op[0] == "bn":
            k = op[1]
            nodes.append(helper.make_node(
                "BatchNormalization",
                [x] + [const(k + "." + n, sd[k + "." + n])
                       for n in ("weight", "bias", "running_mean", "running_var")],
                [y], name=f"BatchNormalization_{len(nodes)}", epsilon=1e-5))
        elif op[0] == "prelu":
            nodes.append(helper.make_node(
                "PRelu", [x, const(fresh("onnx::PRelu_"),
                                   sd[op[1] + ".weight"][:, None, None])],
                [y], name=f"PRelu_{len(nodes)}"))
        elif op[0] == "flatten" and matmul:
            shape = numpy_helper.from_array(np.array([0, -1], np.int64), fresh())
            inits.append(shape)
            nodes.append(helper.make_node("Reshape", [x, shape.name], [y],
                                          name=f"Reshape_{len(nodes)}"))
        elif op[0] == "flatten":
            nodes.append(helper.make_node("Flatten", [x], [y], axis=1,
                                          name=f"Flatten_{len(nodes)}"))
        elif op[0] == "linear":
            _, key, bias = op
            if matmul:
                w = const(fresh("onnx::MatMul_"), sd[key + ".weight"].T)
                nodes.append(helper.make_node("MatMul", [x, w], [y],
                                              name=f"MatMul_{len(nodes)}"))
                if bias:
                    x, y = y, fresh("")
                    nodes.append(helper.make_node(
                        "Add", [const(key + ".bias", sd[key + ".bias"]), x], [y],
                        name=f"Add_{len(nodes)}"))
                x, i = y, i + 1
                continue
            ins = [x, const(key + ".weight", sd[key + ".weight"])]
            if bias:
                ins.append(const(key + ".bias", sd[key + ".bias"]))
            nodes.append(helper.make_node("Gemm", ins, [y], transB=1,
                                          name=f"Gemm_{len(nodes)}"))
        elif op[0] == "save":
            saved.append({"in": x, "body": None})
            y = x
        elif op[0] == "branch":  # the shortcut reads the block's input
            saved[-1]["body"], y = x, saved[-1]["in"]
        elif op[0] in ("add", "add_identity"):
            s = saved.pop()
            ins = [x, s["in"]] if s["body"] is None else [s["body"], x]
            nodes.append(helper.make_node("Add", ins, [y], name=f"Add_{len(nodes)}"))
        x, i = y, i + 1
    graph = helper.make_graph(
        nodes, "main", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                      ["None", 3, 112, 112])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.save(model, path)
    return path


def _faces(n=2, seed=1):
    img = np.random.RandomState(seed).randint(0, 256, (n, 3, 112, 112))
    return ((img - 127.5) / 127.5).astype(np.float32)


def _run_onnx(path, X):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input.1": X})[0]


def _embed(net, X):
    return net(mx.nd.array(X)).asnumpy()


CASES = {
    "iresnet18": (lambda: insightface_iresnet([2, 2, 2, 2], 64),
                  lambda: get_model("iresnet18", embedding_size=64)),
    "mobilefacenet_512": (insightface_mbf, lambda: get_model("mobilefacenet_512")),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    src = CASES[request.param][0]()
    X = _faces()
    ref = _run_onnx(write_onnx(src, str(d / "torch.onnx"), fold_bn=False), X)
    return request.param, src, d, X, ref


def _check(out, ref):
    # float32 through 20-50 layers: relative to the embedding's scale
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-4 * np.abs(ref).max())
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99999


# --------------------------------------------------------------- tests ----

def test_read_pth_round_trip(tmp_path):
    sd = {"a.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
          "a.half": np.linspace(-1, 1, 5).astype(np.float16),
          "a.num_batches_tracked": np.array(3, np.int64),
          "module.b": np.arange(6, dtype=np.float32).reshape(2, 3).T.copy()}
    got = read_pth(write_pth(sd, str(tmp_path / "x.pth")))
    assert list(got) == ["a.weight", "a.half", "a.num_batches_tracked", "b"]
    for (k, v), ref in zip(got.items(), sd.values()):
        np.testing.assert_array_equal(v, ref)
        assert v.dtype == ref.dtype and v.shape == ref.shape


def test_pth_strided_view(tmp_path):
    # A transposed tensor saved as a view: stride (1, 3) over storage 0..5.
    sd = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = write_pth(sd, str(tmp_path / "t.pth"))
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    pkl = entries["backbone/data.pkl"]
    pkl = pkl.replace(b"(K\x02K\x03t(K\x03K\x01t", b"(K\x03K\x02t(K\x01K\x03t")
    entries["backbone/data.pkl"] = pkl
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in entries.items():
            zf.writestr(n, b)
    np.testing.assert_array_equal(read_pth(path)["w"], sd["w"].T)


def test_pth_legacy_and_unsafe_refused(tmp_path):
    legacy = tmp_path / "old.pth"
    legacy.write_bytes(b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.")
    with pytest.raises(ValueError, match=r"old\.pth: the legacy .*PyTorch < 1\.6"):
        read_pth(str(legacy))
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("evil/data.pkl", b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00truet\x85R.")
    with pytest.raises(Exception, match="refusing to load os.system"):
        read_pth(str(evil))


def test_pth_into_fr_lib(case):
    name, src, d, X, ref = case
    path = write_pth(src.sd, str(d / "backbone.pth"))
    net = get_model(name, embedding_size=64) if name == "iresnet18" else get_model(name)
    load_insightface_weights(net, path)
    _check(_embed(net, X), ref)
    # hybridized and through get_model's keyword: the same function
    net2 = get_model(name, pretrained="insightface:" + path,
                     **({"embedding_size": 64} if name == "iresnet18" else {}))
    net2.hybridize()
    # get_model's network takes fr_lib's (pixel - 127.5) / 128
    _check(_embed(net2, X * (127.5 / 128)), ref)


def test_onnx_folded_into_fr_lib(case):
    name, src, d, X, ref = case
    path = write_onnx(src, str(d / "model.onnx"), fold_bn=True)
    m = onnx.load(path)
    ops = {n.op_type for n in m.graph.node}
    n_bn = sum(n.op_type == "BatchNormalization" for n in m.graph.node)
    assert "Conv" in ops and n_bn < sum(k[0] == "bn" for k in src.prog)
    exported = _run_onnx(path, X)
    _check(exported, ref)  # the fixture is the same function, folded
    net = CASES[name][1]()
    load_insightface_weights(net, path)
    _check(_embed(net, X), exported)


def test_onnx_matmul_reshape_variant(case):
    name, src, d, X, ref = case
    path = write_onnx(src, str(d / "matmul.onnx"), fold_bn=True, matmul=True)
    assert "Gemm" not in {n.op_type for n in onnx.load(path).graph.node}
    net = load_insightface_weights(CASES[name][1](), path)
    _check(_embed(net, X), ref)


def test_onnx_input_normalisation_refused(tmp_path):
    path = write_onnx(insightface_mbf(), str(tmp_path / "n.onnx"), fold_bn=True,
                      normalise=True)
    with pytest.raises(ValueError, match=r"n\.onnx: the graph normalises its input"):
        load_insightface_weights(get_model("mobilefacenet_512"), path)


def test_wrong_network_is_named(case, tmp_path):
    name, src, d, X, ref = case
    path = write_pth(src.sd, str(tmp_path / "backbone.pth"))
    other = get_model("iresnet34" if name != "iresnet34" else "iresnet18")
    with pytest.raises(ValueError, match=r"backbone\.pth: .*right network"):
        load_insightface_weights(other, path)


def test_no_file_no_network(tmp_path, monkeypatch):
    import urllib.request

    def offline(*a, **k):
        raise OSError("network unreachable")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError) as e:
        insightface_file("w600k_r50", root=str(tmp_path))
    msg = str(e.value)
    assert "w600k_r50.onnx" in msg and f"{INSIGHTFACE_URL}/buffalo_l.zip" in msg
    assert os.listdir(tmp_path) == []  # nothing half-written
    with pytest.raises(FileNotFoundError, match="by hand"):
        insightface_file(str(tmp_path / "backbone.pth"), root=str(tmp_path))
    with pytest.raises(ValueError, match="mobilefacenet_512, not iresnet50"):
        get_model("iresnet50", pretrained="insightface:w600k_mbf")


def test_pack_downloaded_and_extracted(tmp_path, monkeypatch):
    src, X = insightface_mbf(seed=3), _faces()
    onnx_path = write_onnx(src, str(tmp_path / "w.onnx"), fold_bn=True)
    ref = _run_onnx(onnx_path, X)
    import urllib.request

    class Resp:
        def __init__(self, data):
            self.data, self.pos = data, 0

        def read(self, n):
            chunk = self.data[self.pos:self.pos + n]
            self.pos += n
            return chunk

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False
    buf = tmp_path / "pack.zip"
    with zipfile.ZipFile(buf, "w") as zf:
        zf.write(onnx_path, "buffalo_s/w600k_mbf.onnx")
    urls = []
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout: urls.append(url) or Resp(buf.read_bytes()))
    root = tmp_path / "cache"
    got = insightface_file("w600k_mbf", root=str(root))
    assert urls == [f"{INSIGHTFACE_URL}/buffalo_s.zip"]
    assert sorted(os.listdir(root)) == ["w600k_mbf.onnx"]
    net = load_insightface_weights(get_model("mobilefacenet_512"), got)
    _check(_embed(net, X), ref)


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_written_back(name, tmp_path):
    """fr_lib -> arcface_torch names -> .pth -> fr_lib: same keys as the
    InsightFace networks above, same embeddings."""
    from fr_lib.model_zoo.pretrained import insightface_state_dict, save_pth
    src = CASES[name][0]()
    net = load_insightface_weights(CASES[name][1](), write_pth(src.sd, str(tmp_path / "a.pth")))
    sd = insightface_state_dict(net)
    assert list(sd) == [k for k in src.sd if not k.endswith("num_batches_tracked")]
    # mbf's learned BatchNorm1d scale went into the linear layer on loading
    folded = {"features.layers.2.weight", "features.layers.3.weight",
              "features.layers.3.running_mean"} if name.startswith("mobile") else set()
    for k, v in sd.items():
        if k not in folded:
            np.testing.assert_allclose(v, src.sd[k], rtol=1e-5, atol=1e-6, err_msg=k)
    back = load_insightface_weights(CASES[name][1](), save_pth(sd, str(tmp_path / "b.pth")))
    X = _faces()
    np.testing.assert_allclose(_embed(back, X), _embed(net, X), rtol=1e-5, atol=1e-5)
