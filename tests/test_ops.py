"""fr_lib.ops: the native CPU operators against NumPy references and central
finite differences, their use inside the models, export without them, and
the build's error handling."""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

import fr_lib
from fr_lib import ops
from fr_lib.deploy import export_model
from fr_lib.model_zoo import get_model
from fr_lib.native import native_blocks, to_native
from numeric_helpers import numeric_grad

pytestmark = pytest.mark.skipif(not ops.available(),
                                reason="native operators unavailable")


def _prelu_ref(x, alpha):
    a = alpha.reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(x > 0, x, a * x)


def _prelu_grads_ref(x, alpha, g):
    a = alpha.reshape((1, -1) + (1,) * (x.ndim - 2))
    dx = np.where(x > 0, g, a * g)
    prod = np.where(x > 0, 0.0, g * x)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    da = prod.sum() if alpha.size == 1 else prod.sum(axis=axes)
    return dx, np.reshape(da, alpha.shape)


def _run_prelu(x, alpha, g):
    xn, an = mx.nd.array(x, dtype=x.dtype), mx.nd.array(alpha, dtype=x.dtype)
    xn.attach_grad()
    an.attach_grad()
    with autograd.record():
        y = mx.nd.fr_prelu(xn, an)
    y.backward(mx.nd.array(g, dtype=x.dtype))
    return y.asnumpy(), xn.grad.asnumpy(), an.grad.asnumpy()


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (7, 4), (2, 3, 5)])
@pytest.mark.parametrize("shared", [False, True])
def test_prelu_matches_numpy(dtype, tol, shape, shared):
    rng = np.random.RandomState(0)
    x = rng.randn(*shape).astype(dtype)
    # slopes outside [0, 1] too: PReLU must be exact for every slope
    alpha = rng.uniform(-0.5, 1.5, size=1 if shared else shape[1]).astype(dtype)
    g = rng.randn(*shape).astype(dtype)
    y, dx, da = _run_prelu(x, alpha, g)
    dx_ref, da_ref = _prelu_grads_ref(x.astype("float64"), alpha.astype("float64"),
                                      g.astype("float64"))
    np.testing.assert_allclose(y, _prelu_ref(x, alpha), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, dx_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(da, da_ref, rtol=tol, atol=tol * 10)


def test_prelu_gradients_match_finite_differences():
    rng = np.random.RandomState(1)
    x = rng.randn(2, 3, 4, 4)
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
    alpha = np.array([0.1, -0.3, 1.2])
    g = rng.randn(*x.shape)
    _, dx, da = _run_prelu(x, alpha, g)

    def f(xv, av):
        return float((_prelu_ref(xv, av) * g).sum())

    num_dx = numeric_grad(lambda v: f(v, alpha), x)
    num_da = numeric_grad(lambda v: f(x, v), alpha)
    np.testing.assert_allclose(dx, num_dx, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(da, num_da, rtol=1e-6, atol=1e-8)


def test_prelu_rejects_bad_shapes():
    with pytest.raises(mx.base.MXNetError, match="alpha must have shape"):
        mx.nd.fr_prelu(mx.nd.ones((2, 3, 4)), mx.nd.ones((2,))).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="at least 2 dimensions|>= 2"):
        mx.nd.fr_prelu(mx.nd.ones((4,)), mx.nd.ones((1,))).wait_to_read()


# ---- fr_margin_ce --------------------------------------------------------

def _margin_ce_ref(cos, label, target, s, replace):
    z = s * cos.astype("float64")
    rows = np.arange(len(label))
    if replace:
        z[rows, label] = s * target
    m = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(axis=1)) + m[:, 0]
    return lse - z[rows, label]


def _run_margin_ce(cos, label, target, s, replace, g=None):
    dtype = cos.dtype
    c = mx.nd.array(cos, dtype=dtype)
    t = mx.nd.array(target, dtype=dtype)
    c.attach_grad()
    t.attach_grad()
    with autograd.record():
        loss = mx.nd.fr_margin_ce(c, mx.nd.array(label, dtype=dtype), t,
                                  scale=s, replace=int(replace))[0]
    loss.backward(mx.nd.array(np.ones(len(label)) if g is None else g, dtype=dtype))
    return loss.asnumpy(), c.grad.asnumpy(), t.grad.asnumpy()


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("replace", [True, False])
@pytest.mark.parametrize("shape", [(5, 7), (3, 9000), (1, 2)])
def test_margin_ce_matches_numpy(dtype, tol, replace, shape):
    rng = np.random.RandomState(2)
    batch, classes = shape
    cos = rng.uniform(-1, 1, size=shape).astype(dtype)
    label = rng.randint(0, classes, size=batch)
    target = (cos[np.arange(batch), label] - 0.3).astype(dtype)
    s = 30.0
    loss, dcos, dt = _run_margin_ce(cos, label, target, s, replace)
    ref = _margin_ce_ref(cos, label, target.astype("float64"), s, replace)
    np.testing.assert_allclose(loss, ref, rtol=tol, atol=tol)
    # analytic gradient of the reference: s * (softmax - onehot)
    z = s * cos.astype("float64")
    rows = np.arange(batch)
    if replace:
        z[rows, label] = s * target
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[rows, label] -= 1
    grad = s * p
    if replace:
        np.testing.assert_allclose(dt, grad[rows, label], rtol=tol, atol=tol)
        grad[rows, label] = 0
    else:
        np.testing.assert_allclose(dt, 0)
    np.testing.assert_allclose(dcos, grad, rtol=tol * 10, atol=tol)


def test_margin_ce_gradients_match_finite_differences():
    rng = np.random.RandomState(3)
    cos = rng.uniform(-1, 1, size=(3, 6))
    label = np.array([0, 5, 2])
    target = cos[np.arange(3), label] - 0.2
    g = rng.uniform(0.5, 2, size=3)
    s = 8.0
    _, dcos, dt = _run_margin_ce(cos, label, target, s, True, g)

    def f(c, t):
        return float((_margin_ce_ref(c, label, t, s, True) * g).sum())

    num = numeric_grad(lambda v: f(v, target), cos)
    num_t = numeric_grad(lambda v: f(cos, v), target)
    np.testing.assert_allclose(dcos, num, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dt, num_t, rtol=1e-6, atol=1e-9)


def test_margin_ce_is_accurate_when_the_true_class_dominates():
    # s = 64, the target near 1 and the others near -1: the loss is about
    # 1e-30 in exact arithmetic terms; the float32 kernel must neither
    # underflow to -inf/NaN nor lose the small terms by cancellation.
    cos = np.full((2, 1000), -0.9, dtype="float32")
    label = np.array([3, 999])
    cos[np.arange(2), label] = 1.0
    target = np.array([0.95, 0.2], dtype="float32")
    loss, dcos, dt = _run_margin_ce(cos, label, target, 64.0, True)
    ref = _margin_ce_ref(cos, label, target.astype("float64"), 64.0, True)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(dcos))
    np.testing.assert_allclose(loss, ref, rtol=1e-5)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_margin_ce_subcenters_take_the_best_column(dtype, tol):
    """subcenters=k: a class's cosine is the largest of its k columns, and
    the gradient reaches that column only."""
    rng = np.random.RandomState(4)
    batch, classes, k, s = 4, 6, 3, 10.0
    raw = rng.uniform(-1, 1, size=(batch, classes * k)).astype(dtype)
    label = rng.randint(0, classes, size=batch)
    grouped = raw.reshape(batch, classes, k)
    cos = grouped.max(axis=2)
    target = (cos[np.arange(batch), label] - 0.25).astype(dtype)
    c = mx.nd.array(raw, dtype=dtype)
    t = mx.nd.array(target, dtype=dtype)
    c.attach_grad()
    t.attach_grad()
    with autograd.record():
        loss = mx.nd.fr_margin_ce(c, mx.nd.array(label, dtype=dtype), t, scale=s,
                                  subcenters=k)[0]
    loss.backward()
    ref = _margin_ce_ref(cos, label, target.astype("float64"), s, True)
    np.testing.assert_allclose(loss.asnumpy(), ref, rtol=tol, atol=tol)
    _, dcos, dt = _run_margin_ce(cos, label, target, s, True)
    expect = np.zeros_like(grouped)
    best = grouped.argmax(axis=2)
    for i, j in np.ndindex(batch, classes):
        expect[i, j, best[i, j]] = dcos[i, j]
    np.testing.assert_allclose(c.grad.asnumpy(), expect.reshape(raw.shape),
                               rtol=tol * 10, atol=tol)
    np.testing.assert_allclose(t.grad.asnumpy(), dt, rtol=tol * 10, atol=tol)
    with pytest.raises(mx.base.MXNetError, match="whole number of classes"):
        mx.nd.fr_margin_ce(c, mx.nd.array(label), t, scale=s,
                           subcenters=4)[0].wait_to_read()


@pytest.mark.parametrize("k", [1, 3])
def test_margin_ce_target_slope_equals_autograd_through_the_target(k):
    """target_slope: the kernel applies d target / d cos_y itself; the
    gradient must equal autograd's through pick -> target."""
    rng = np.random.RandomState(5)
    batch, classes, s = 5, 7, 12.0
    raw = mx.nd.array(rng.uniform(-1, 1, size=(batch, classes * k)), dtype="float64")
    label = mx.nd.array(rng.randint(0, classes, size=batch), dtype="float64")
    per_centre = mx.nd.broadcast_axis(label.reshape((-1, 1)), axis=1, size=k)
    grads = []
    for use_slope in (True, False):
        c = raw.copy()
        c.attach_grad()
        with autograd.record():
            cos_y = mx.nd.pick(c.reshape((0, -4, -1, k)), per_centre, axis=1).max(axis=1)
            if use_slope:
                cos_y = mx.nd.stop_gradient(cos_y)
            target = 0.8 * cos_y * cos_y - 0.3          # slope 1.6 cos_y
            extra = [1.6 * cos_y] if use_slope else []
            loss = mx.nd.fr_margin_ce(c, label, target, *extra, scale=s, subcenters=k,
                                      target_slope=int(use_slope))[0]
        loss.backward()
        grads.append(c.grad.asnumpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=1e-14)


def test_margin_ce_rejects_out_of_range_labels():
    with pytest.raises(mx.base.MXNetError, match="label 7"):
        mx.nd.fr_margin_ce(mx.nd.zeros((2, 5)), mx.nd.array([1, 7]), mx.nd.zeros(2),
                           scale=1.0)[0].wait_to_read()


# ---- in the models ---------------------------------------------------------

@pytest.mark.parametrize("name", ["mobilefacenet", "iresnet18"])
def test_models_agree_with_and_without_native_ops(name):
    """Forward outputs and every parameter gradient (PReLU slopes included)
    are the same with the native operators. In float64: in float32 the two
    PReLU formulas round differently and 50 layers of BatchNorm backward
    amplify that to ~1e-3 at the first layer, which would hide real bugs."""
    x = mx.nd.random.uniform(-1, 1, shape=(2, 3, 112, 112), dtype="float64")
    results = []
    for native in (True, False):
        mx.random.seed(0)
        net = get_model(name, embedding_size=16)
        net.initialize(mx.init.Xavier())
        net.cast("float64")
        net(x)  # deferred initialisation
        for p in net.collect_params(".*alpha").values():
            p.set_data(mx.nd.random.uniform(-0.2, 0.9, shape=p.shape,
                                            dtype="float64"))
        if native:
            assert native_blocks(to_native(net, "native"))
        with autograd.record():
            emb = net(x)
            loss = (emb ** 2).sum()
        loss.backward()
        grads = {k[len(net.prefix):]: v.grad().asnumpy()
                 for k, v in net.collect_params().items() if v.grad_req != "null"}
        results.append((emb.asnumpy(), grads))
    (e1, g1), (e2, g2) = results
    np.testing.assert_allclose(e1, e2, rtol=1e-9, atol=1e-12)
    assert g1.keys() == g2.keys()
    assert any("alpha" in k for k in g1)
    scale = max(np.abs(g).max() for g in g2.values())
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-7, atol=1e-10 * scale,
                                   err_msg=k)


def test_export_never_contains_native_ops(tmp_path):
    net = to_native(get_model("mobilefacenet", embedding_size=32), "native")
    net.initialize()
    net.hybridize()
    x = mx.nd.random.uniform(shape=(2, 3, 112, 112))
    before = net(x).asnumpy()
    export_model(net, str(tmp_path / "m"))
    nodes = json.load(open(tmp_path / "m-symbol.json"))["nodes"]
    assert not [n["op"] for n in nodes if n["op"].startswith("fr_")]
    # the network itself goes back to the native operators afterwards
    np.testing.assert_allclose(net(x).asnumpy(), before, rtol=1e-5, atol=1e-6)
    graph = json.loads(net._cached_graph[1].tojson())["nodes"]
    assert any(n["op"] == "fr_prelu" for n in graph)



# ---- plain exports (HybridBlock.export) -------------------------------------

_LOAD_PLAIN = """
import json, os, sys
import mxnet as mx, numpy as np
from fr_lib import ops
root = sys.argv[1]
names = json.load(open(os.path.join(root, "names.json")))
worst = {}
for name in names:
    prefix = os.path.join(root, name)
    net = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"],
                                       prefix + "-0000.params")
    x = mx.nd.array(np.load(prefix + "-x.npy"))
    ref = np.load(prefix + "-y.npy")
    out = net(x).asnumpy()
    worst[name] = float(np.abs(out - ref).max() / np.abs(ref).max())
maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
print(json.dumps({"worst": worst, "native_state": ops._state["loaded"],
                  "mapped": "libfr_ops" in maps}))
"""


def _export_input(name):
    shape = (1, 1, 28, 28) if name.startswith("lenet") else (1, 3, 112, 112)
    return mx.nd.array(np.random.RandomState(3).uniform(-1, 1, shape))


DEEPER_SIBLINGS = ["attention_net92", "iresnet34", "iresnet50", "iresnet100",
                   "iresnet200", "se_lresnet50e", "se_lresnet101e"]


def test_plain_export_of_every_backbone_loads_without_fr_lib(tmp_path):
    """A plain ``net.hybridize(); net(x); net.export()`` of each model-zoo
    family (converted to native, as the trainer does on CPU) loads in a
    process that never loaded the native library and gives the same
    embeddings; the deeper siblings trace only operator types already
    exported and loaded."""
    from numeric_helpers import randomise_backbone
    every = fr_lib.model_zoo.get_model_list()
    # the smallest member of each family is exported and loaded; a deeper
    # sibling repeats its blocks, and must trace no operator type the
    # exported ones lack (what decides whether plain MXNet can load it)
    names = [n for n in every if n not in DEEPER_SIBLINGS]
    assert set(DEEPER_SIBLINGS) < set(every)
    traced_native, exported_ops = [], set()
    for name in names:
        net = randomise_backbone(get_model(name), 0, alpha_range=(-0.5, 1.5), shift=0.2)
        # halved BN scales keep the 100-200-layer nets' activations bounded:
        # otherwise they grow to 1e8 and amplify float32 rounding (MKL-DNN's
        # fused kernels in the loaded graph) into O(1) differences
        for pname, p in net.collect_params().items():
            if pname.endswith("gamma"):
                p.set_data(p.data() * 0.5)
        to_native(net, "native")  # what the trainer does on CPU
        net.hybridize()
        x = _export_input(name)
        y = net(x).asnumpy()
        graph = json.loads(net._cached_graph[1].tojson())["nodes"]
        if any(n["op"] == "fr_prelu" for n in graph):
            traced_native.append(name)
        prefix = str(tmp_path / name)
        net.export(prefix)
        nodes = json.load(open(prefix + "-symbol.json"))["nodes"]
        assert not [n["op"] for n in nodes if n["op"].startswith("fr_")], name
        exported_ops |= {n["op"] for n in nodes}
        # the network keeps its native graph for training and inference
        graph = json.loads(net._cached_graph[1].tojson())["nodes"]
        assert (name in traced_native) == any(n["op"] == "fr_prelu" for n in graph)
        np.save(prefix + "-x.npy", x.asnumpy())
        np.save(prefix + "-y.npy", y)
    # the case this guards: fr_lib's PReLU, converted, traces fr_prelu
    assert "mobilefacenet" in traced_native and "iresnet18" in traced_native
    for name in DEEPER_SIBLINGS:
        net = to_native(get_model(name), "native")
        sym = ops.plain_symbol(net(mx.sym.var("data")))
        deeper_ops = {n["op"] for n in json.loads(sym.tojson())["nodes"]}
        assert deeper_ops <= exported_ops, (name, deeper_ops - exported_ops)
    json.dump(names, open(tmp_path / "names.json", "w"))
    env = dict(os.environ, FR_LIB_NATIVE="0", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _LOAD_PLAIN, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["native_state"] is None and not result["mapped"]
    assert set(result["worst"]) == set(names)
    for name, err in result["worst"].items():
        assert err < 1e-4, (name, err)


class _NativeConv(mx.gluon.HybridBlock):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.weight = self.params.get("weight", shape=(32, 32, 1, 1))

    def hybrid_forward(self, F, x, weight):
        return F.fr_pw_conv(x, weight)


def test_plain_export_refuses_other_native_ops(tmp_path):
    net = _NativeConv()
    net.initialize()
    net.hybridize()
    net(mx.nd.ones((1, 2, 2, 32)))
    with pytest.raises(ops.NativeExportError,
                       match=r"fr_pw_conv.*export_model\(net, prefix\)"):
        net.export(str(tmp_path / "n"))
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_plain_symbol_is_leaky_relu_prelu():
    x, a = mx.sym.var("x"), mx.sym.var("a")
    plain = ops.plain_symbol(mx.sym.fr_prelu(x, a, name="p"))
    nodes = json.loads(plain.tojson())["nodes"]
    assert [(n["op"], n.get("attrs")) for n in nodes if n["op"] != "null"] == \
        [("LeakyReLU", {"act_type": "prelu"})]
    assert plain.list_arguments() == ["x", "a"]
    sym = mx.sym.relu(x)
    assert ops.plain_symbol(sym) is sym


# ---- build and load ------------------------------------------------------

def test_build_failure_names_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("FR_LIB_NATIVE_DIR", str(tmp_path))
    # build() finds its compiler in fr_lib.ops.library, where it is defined
    monkeypatch.setattr(ops.library, "_compiler", lambda: "/bin/false")
    with pytest.raises(ops.NativeBuildError, match="fr_ops.cc"):
        ops.build(force=True)
    assert not list(tmp_path.rglob("*.so"))  # no half-written library left


def test_build_without_compiler_says_so(monkeypatch):
    monkeypatch.setattr(ops.library, "_compiler", lambda: None)
    with pytest.raises(ops.NativeBuildError, match="no C\\+\\+ compiler"):
        ops.build()


def test_disabled_by_environment_falls_back():
    code = ("import warnings\n"
            "import fr_lib, mxnet as mx\n"
            "from fr_lib import ops\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    print(ops.load(), [str(w.message) for w in caught])\n"
            "net = fr_lib.get_model('mobilefacenet'); net.initialize()\n"
            "print(net(mx.nd.zeros((1, 3, 112, 112))).shape)\n")
    env = dict(os.environ, FR_LIB_NATIVE="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # switched off on purpose: no warning, and the model still runs
    assert out.stdout.splitlines() == ["False []", "(1, 128)"]


def test_library_path_depends_on_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("FR_LIB_NATIVE_DIR", str(tmp_path))
    path = ops.library_path()
    assert path.startswith(str(tmp_path)) and path.endswith("libfr_ops.so")
    seen = {path}
    for name in ("_SOURCES", "_HEADERS"):  # any source or header changes the key
        files = list(getattr(ops.library, name))
        copy = tmp_path / ("changed_" + os.path.basename(files[-1]))
        copy.write_text(open(files[-1]).read() + "\n// changed\n")
        with monkeypatch.context() as m:
            m.setattr(ops.library, name, tuple(files[:-1] + [str(copy)]))
            seen.add(ops.library_path())
    assert len(seen) == 3
