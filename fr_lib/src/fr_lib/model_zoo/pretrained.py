"""InsightFace's published recognition weights, loaded into fr_lib backbones.

Two formats are read, neither needs PyTorch:

``backbone.pth``
    arcface_torch's state dicts (``torch.save(backbone.state_dict())``) of
    IResNet-18/34/50/100 (``r18`` ... ``r100``) and ``mbf``. A ``.pth`` of
    PyTorch >= 1.6 is a zip archive: ``<name>/data.pkl`` (a pickle whose
    tensors are ``torch._utils._rebuild_tensor_v2`` calls on persistent
    storages) and the raw storages ``<name>/data/<key>``. :func:`read_pth`
    unpickles it with a restricted unpickler that allows only those names.
    The legacy (pre-1.6, non-zip) format is refused with an explanation.
``*.onnx``
    The recognition models of InsightFace's model packs (``w600k_r50.onnx``
    in ``buffalo_l``, ``w600k_mbf.onnx`` in ``buffalo_s``, ``glintr100.onnx``
    in ``antelopev2``), exported by ``arcface_torch/torch2onnx.py`` with
    ``torch.onnx.export``, which folds each BatchNorm that follows a
    convolution into that convolution's weight and bias. The loader puts
    the folded bias into the fr_lib BatchNorm that follows the convolution
    (``gamma=1, mean=0, var=1-eps, beta=bias``): the same function exactly.
    Needs the ``onnx`` package.

Both are reduced to one ordered list of layers (convolution, BatchNorm,
PReLU, fully connected) in the order of the source network's forward pass,
and matched one by one against the fr_lib network's layers; every shape is
checked. BatchNorm epsilons that differ (PyTorch 1e-5, fr_lib 2e-5) are
absorbed into the running variance, and a learned scale on a BatchNorm that
fr_lib keeps at 1 (``mbf``'s last BatchNorm1d) is folded into the layer
before it, so the loaded network computes the source network's function.

Input: 112x112 aligned RGB faces. :func:`load_insightface_weights` keeps
InsightFace's normalisation ``(pixel - 127.5) / 127.5`` by default;
``get_model(..., pretrained=...)`` rescales the first convolution so that
the network takes fr_lib's ``(pixel - 127.5) / 128`` and works with
:mod:`fr_lib.deploy` and :mod:`fr_lib.metrics` unchanged.

>>> net = get_model('iresnet50', pretrained='insightface:w600k_r50')  # doctest: +SKIP
>>> net = get_model('iresnet50',
...                 pretrained='insightface:ms1mv3_r50/backbone.pth')  # doctest: +SKIP
"""
import io
import os
import pickle
import tempfile
import zipfile
from collections import OrderedDict

import numpy as np

__all__ = ["INSIGHTFACE_MODELS", "INSIGHTFACE_URL", "read_pth", "read_onnx",
           "source_layers", "load_insightface_weights", "insightface_file",
           "load_pretrained", "insightface_state_dict", "save_pth"]

INSIGHTFACE_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7"

# name -> (fr_lib model, model pack zip, member of the pack)
INSIGHTFACE_MODELS = {
    "w600k_r50": ("iresnet50", "buffalo_l.zip", "w600k_r50.onnx"),
    "w600k_mbf": ("mobilefacenet_512", "buffalo_s.zip", "w600k_mbf.onnx"),
    "glintr100": ("iresnet100", "antelopev2.zip", "glintr100.onnx"),
}

_TORCH_EPS = 1e-5
# fr_lib normalises pixels by 128, InsightFace by 127.5
FR_LIB_INPUT_SCALE = 128 / 127.5
_STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2",
    "BFloat16Storage": "bf16", "LongStorage": "i8", "IntStorage": "i4",
    "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}


# ---------------------------------------------------------------- .pth ----

class _StorageType:
    def __init__(self, name):
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *unused):
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(storage[offset])
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[s * item for s in stride])
    return np.array(view)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


class _PthUnpickler(pickle.Unpickler):
    """Only the globals a state dict needs; everything else is refused."""

    def __init__(self, f, load_storage, path):
        super().__init__(f)
        self._load_storage = load_storage
        self._path = path

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2",
                                                 "_rebuild_tensor"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"{self._path}: refusing to load {module}.{name}: only state "
            "dicts of tensors can be read without torch (save the model "
            "with torch.save(model.state_dict(), path))")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self._path}: unknown persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        return self._load_storage(storage_type.name, str(key), int(numel))


def read_pth(path):
    """Read a PyTorch zip-format ``.pth`` state dict without torch.

    Returns
    -------
    OrderedDict of str -> numpy.ndarray
        In the file's order (a module's registration order); a
        ``module.`` prefix (DataParallel) is removed.
    """
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        kind = ("the legacy (PyTorch < 1.6) serialization format"
                if head[:1] == b"\x80" else "not a zip archive")
        raise ValueError(
            f"{path}: {kind}; read_pth reads the zip format of PyTorch >= 1.6. "
            "Re-save it where torch is installed: torch.save(torch.load(p), "
            "p, _use_new_zipfile_serialization=True)")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError(f"{path}: expected one data.pkl in the archive, "
                             f"found {pkl or 'none'}")
        prefix = pkl[0][:-len("data.pkl")]
        order = "little"
        if prefix + "byteorder" in names:
            order = zf.read(prefix + "byteorder").decode().strip()
        endian = "<" if order == "little" else ">"

        def load_storage(type_name, key, numel):
            raw = zf.read(f"{prefix}data/{key}")
            code = _STORAGE_DTYPES[type_name]
            if code == "bf16":
                bits = np.frombuffer(raw, endian + "u2")[:numel].astype(np.uint32)
                return (bits << 16).view(np.float32)
            dtype = np.dtype(code if code in ("?", "u1", "i1") else endian + code)
            return np.frombuffer(raw, dtype)[:numel].astype(dtype.newbyteorder("="))

        obj = _PthUnpickler(io.BytesIO(zf.read(pkl[0])), load_storage, path).load()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    out = OrderedDict()
    for k, v in obj.items():
        out[k[len("module."):] if k.startswith("module.") else k] = np.asarray(v)
    return out


def _layers_from_state_dict(sd, path):
    """Group ``<module>.<param>`` keys into layers, in the file's order."""
    groups = OrderedDict()
    for key, value in sd.items():
        module, _, param = key.rpartition(".")
        if param == "num_batches_tracked":
            continue
        groups.setdefault(module, {})[param] = value.astype(np.float32)
    layers = []
    for module, p in groups.items():
        if "running_mean" in p:
            c = p["running_mean"].shape[0]
            layers.append(dict(kind="bn", name=module,
                               gamma=p.get("weight", np.ones(c, np.float32)),
                               beta=p.get("bias", np.zeros(c, np.float32)),
                               mean=p["running_mean"], var=p["running_var"],
                               eps=_TORCH_EPS))
        elif "weight" in p and p["weight"].ndim == 4:
            layers.append(dict(kind="conv", name=module, weight=p["weight"],
                               bias=p.get("bias")))
        elif "weight" in p and p["weight"].ndim == 2:
            layers.append(dict(kind="dense", name=module, weight=p["weight"],
                               bias=p.get("bias")))
        elif set(p) == {"weight"} and p["weight"].ndim == 1:
            layers.append(dict(kind="prelu", name=module, alpha=p["weight"]))
        else:
            raise ValueError(f"{path}: cannot tell what layer {module!r} is "
                             f"(parameters {sorted(p)})")
    return layers


# ---------------------------------------------------------------- ONNX ----

def read_onnx(path):
    """The parameterised layers of an ONNX recognition model, in graph order."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:  # pragma: no cover
        raise ImportError("reading ONNX models needs the onnx package: "
                          "pip install onnx") from e
    model = onnx.load(path)
    graph = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    init[node.output[0]] = numpy_helper.to_array(a.t)

    def attr(node, name, default):
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    def weight(node, i):
        if len(node.input) <= i or not node.input[i]:
            return None
        if node.input[i] not in init:
            raise ValueError(f"{path}: node {node.name or node.op_type} input "
                             f"{node.input[i]!r} is not a constant")
        return np.asarray(init[node.input[i]], np.float32)

    layers, seen_conv = [], False
    structural = {"Add", "Flatten", "Reshape", "Identity", "Dropout", "Shape",
                  "Gather", "Unsqueeze", "Concat", "Constant", "Squeeze",
                  "Cast"}
    for node in graph.node:
        op, name = node.op_type, node.name or node.op_type
        if op == "Conv":
            seen_conv = True
            layers.append(dict(kind="conv", name=name, weight=weight(node, 1),
                               bias=weight(node, 2)))
        elif op == "BatchNormalization":
            layers.append(dict(kind="bn", name=name, gamma=weight(node, 1),
                               beta=weight(node, 2), mean=weight(node, 3),
                               var=weight(node, 4),
                               eps=float(attr(node, "epsilon", 1e-5))))
        elif op == "PRelu":
            layers.append(dict(kind="prelu", name=name,
                               alpha=weight(node, 1).reshape(-1)))
        elif op == "Gemm":
            w = weight(node, 1)
            if attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0 \
                    or attr(node, "beta", 1.0) != 1.0:
                raise ValueError(f"{path}: Gemm {name} with transA/alpha/beta "
                                 "is not supported")
            if not attr(node, "transB", 0):
                w = w.T
            layers.append(dict(kind="dense", name=name, weight=w,
                               bias=weight(node, 2)))
        elif op == "MatMul":
            layers.append(dict(kind="dense", name=name, weight=weight(node, 1).T,
                               bias=None))
        elif op == "Add" and layers and layers[-1]["kind"] == "dense" \
                and layers[-1]["bias"] is None \
                and any(i in init for i in node.input):
            layers[-1]["bias"] = next(np.asarray(init[i], np.float32)
                                      for i in node.input if i in init)
        elif op in ("Sub", "Mul", "Div") and not seen_conv:
            raise ValueError(
                f"{path}: the graph normalises its input ({op} before the "
                "first convolution); fr_lib backbones take normalised input "
                "and this model is not supported")
        elif op not in structural:
            raise ValueError(f"{path}: unsupported ONNX operator {op} ({name}); "
                             "expected an InsightFace IResNet or MobileFaceNet")
    return layers


def source_layers(path):
    """Layers of ``path`` (``.onnx`` or a PyTorch ``.pth``), in forward order."""
    if str(path).lower().endswith(".onnx"):
        return read_onnx(path)
    return _layers_from_state_dict(read_pth(path), path)


# ------------------------------------------------------------- matching ----

def _target_layers(block):
    """fr_lib's conv / BN / PReLU / dense blocks in registration order (the
    forward order for the backbones this module supports)."""
    from mxnet.gluon import nn
    from .layers import PReLU
    out = []
    for child in block._children.values():
        if isinstance(child, nn.Conv2D):
            out.append(("conv", child))
        elif isinstance(child, nn.BatchNorm):
            out.append(("bn", child))
        elif isinstance(child, (PReLU, nn.PReLU)):
            out.append(("prelu", child))
        elif isinstance(child, nn.Dense):
            out.append(("dense", child))
        else:
            out.extend(_target_layers(child))
    return out


def _set(param, value, src, path):
    value = np.asarray(value, np.float32)
    if tuple(param.shape) != value.shape:
        raise ValueError(f"{path}: {src} has shape {value.shape}, fr_lib's "
                         f"{param.name} expects {tuple(param.shape)}; is this "
                         "the right network for these weights?")
    param.set_data(value)


def load_insightface_weights(net, path, input_scale=1.0):
    """Load InsightFace weights (``.pth`` state dict or ``.onnx``) into ``net``.

    ``net`` is an fr_lib :class:`IResNet` (``iresnet18/34/50/100/200``) or
    :class:`MobileFaceNet` (``mobilefacenet_512`` for ``mbf``); it is
    initialised first if it is not. Returns ``net``.

    Parameters
    ----------
    net : HybridBlock
    path : str
        ``.onnx`` or a zip-format ``.pth``.
    input_scale : float, default 1
        Multiplies the first convolution (bias-free, zero-padded, so this is
        exact): with 1 the network takes InsightFace's input
        ``(pixel - 127.5) / 127.5``; with ``128 / 127.5`` it takes fr_lib's
        ``(pixel - 127.5) / 128`` (:func:`fr_lib.data.normalize_batch`) and
        gives InsightFace's embeddings. :func:`get_model` uses the latter.

    Raises
    ------
    ValueError
        When the layers do not match in kind, number or shape (the message
        names the source layer and the fr_lib parameter).
    """
    import mxnet as mx
    path = os.fspath(path)
    src = source_layers(path)
    params = net.collect_params()
    if any(p._data is None for p in params.values()):
        net.initialize(mx.init.Zero())
    targets = _target_layers(net)
    i, pending_bias, last, first = 0, None, None, True

    def take(kind):
        nonlocal i
        if i < len(src) and src[i]["kind"] == kind:
            i += 1
            return src[i - 1]
        found = f"{src[i]['kind']} {src[i]['name']!r}" if i < len(src) else "the end"
        raise ValueError(f"{path}: fr_lib's {blk.name} needs a {kind} layer, the "
                         f"file has {found} (source layer {i}); is this the "
                         "right network for these weights?")

    for kind, blk in targets:
        if kind == "conv":
            s = src[i] if i < len(src) else None
            if s is not None and s["kind"] == "dense" and blk.weight.shape[2:] == (1, 1):
                s = take("dense")  # mbf's Linear is fr_lib's 1x1 convolution
                w = s["weight"][:, :, None, None]
            else:
                s = take("conv")
                w = s["weight"]
            if first:
                w, first = w * np.float32(input_scale), False
            _set(blk.weight, w, s["name"], path)
            pending_bias, last = s["bias"], (blk, w, s["bias"], s["name"])
        elif kind == "dense":
            s = take("dense")
            bias = s["bias"] if s["bias"] is not None else np.zeros(s["weight"].shape[0])
            _set(blk.weight, s["weight"], s["name"], path)
            _set(blk.bias, bias, s["name"], path)
            pending_bias, last = None, (blk, s["weight"], bias, s["name"])
        elif kind == "prelu":
            s = take("prelu")
            _set(blk.alpha, s["alpha"], s["name"], path)
            pending_bias, last = None, None
        else:  # bn
            c = blk.gamma.shape[0]
            eps = blk._kwargs["eps"]
            if pending_bias is not None:
                # A convolution with a bias where fr_lib has conv + BN: the
                # exporter folded the BN into it (InsightFace's convolutions
                # have no bias of their own). BN(x) = x + bias.
                what = f"the bias of {last[3]}"
                gamma, beta = np.ones(c), pending_bias
                mean, var = np.zeros(c), np.full(c, 1.0 - eps)
                pending_bias = None
            else:
                s = take("bn")
                what = s["name"]
                gamma, beta = s["gamma"], s["beta"]
                # same sqrt(var + eps) under fr_lib's epsilon
                mean, var = s["mean"].copy(), s["var"] + s["eps"] - eps
            fixed = blk._kwargs["fix_gamma"]
            if fixed and not np.allclose(gamma, 1.0):
                if last is None:
                    raise ValueError(f"{path}: fr_lib's {blk.name} keeps gamma at 1 "
                                     f"and {what} has a scale with no layer to "
                                     "fold it into")
                lblk, w, b, _ = last
                g = gamma.reshape((-1,) + (1,) * (w.ndim - 1))
                _set(lblk.weight, w * g, what, path)
                if getattr(lblk, "bias", None) is not None:
                    _set(lblk.bias, b * gamma, what, path)
                mean = mean * gamma
                gamma = np.ones(c)
            for prm, val in ((blk.gamma, gamma), (blk.beta, beta),
                             (blk.running_mean, mean), (blk.running_var, var)):
                _set(prm, val, what, path)
            last = None
    if i != len(src):
        raise ValueError(f"{path}: {len(src) - i} source layers left over after "
                         f"filling fr_lib's network (next: {src[i]['name']!r}); "
                         "is this the right network for these weights?")
    return net


# -------------------------------------------------------------- files -----

def _cache_dir():
    root = os.environ.get("MXNET_HOME", os.path.join("~", ".mxnet"))
    return os.path.join(os.path.expanduser(root), "models", "insightface")


def _download(url, dest):
    """Download ``url`` to ``dest`` through a temporary file and a rename."""
    import urllib.request
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def insightface_file(spec, root=None, download=True):
    """The local path of an InsightFace model named by ``spec``.

    Book: introduced in ``chapter_deployment/verification-demo`` (人脸验证演示).

    ``spec`` is a path to a ``.pth`` or ``.onnx`` file, or a name of
    :data:`INSIGHTFACE_MODELS` (``w600k_r50``, ``w600k_mbf``, ``glintr100``,
    with or without ``.onnx``). Names are looked up in ``root`` (default
    ``~/.mxnet/models/insightface``); when missing, the model pack is
    downloaded from InsightFace's release page, the member extracted
    (atomically) and the zip removed. ``.pth`` backbones are published on
    OneDrive/Baidu only, so they are never downloaded: pass their path.
    """
    spec = os.path.expanduser(str(spec))
    if os.path.isfile(spec):
        return spec
    root = os.path.expanduser(root) if root else _cache_dir()
    base = os.path.basename(spec)
    name = base[:-5] if base.endswith(".onnx") else base
    cached = os.path.join(root, base if base.endswith((".onnx", ".pth")) else name + ".onnx")
    if os.path.isfile(cached):
        return cached
    if name not in INSIGHTFACE_MODELS:
        raise FileNotFoundError(
            f"no file {spec!r} and no cached {cached!r}; InsightFace's .pth "
            "backbones (arcface_torch model zoo, OneDrive/Baidu links in "
            "recognition/arcface_torch/README.md) must be downloaded by hand "
            f"and passed by path; known ONNX names: {sorted(INSIGHTFACE_MODELS)}")
    _, pack, member = INSIGHTFACE_MODELS[name]
    url = f"{INSIGHTFACE_URL}/{pack}"
    if not download:
        raise FileNotFoundError(f"{cached} not found and download=False; "
                                f"it is {member} in {url}")
    zpath = os.path.join(root, pack)
    try:
        if not os.path.isfile(zpath):
            _download(url, zpath)
    except OSError as e:
        raise FileNotFoundError(
            f"{cached} not found and {url} could not be downloaded ({e}); "
            f"without a network, download {pack} elsewhere and put {member} "
            f"at {cached}") from e
    if not zipfile.is_zipfile(zpath):
        os.remove(zpath)
        raise ValueError(f"{zpath} (from {url}) is not a zip archive; removed it, "
                         "try again")
    with zipfile.ZipFile(zpath) as zf:
        hits = [n for n in zf.namelist() if os.path.basename(n) == member]
        if not hits:
            raise ValueError(f"{zpath}: no {member} in the archive")
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(zf.read(hits[0]))
        os.replace(tmp, cached)
    os.remove(zpath)
    return cached


def load_pretrained(net, name, pretrained):
    """``get_model(name, pretrained=...)``: ``'insightface:<file or name>'``."""
    if not isinstance(pretrained, str) or not pretrained.startswith("insightface:"):
        raise ValueError(f"pretrained={pretrained!r}: expected 'insightface:<path "
                         f"or name>', names: {sorted(INSIGHTFACE_MODELS)}")
    spec = pretrained[len("insightface:"):]
    key = os.path.basename(spec)
    key = key[:-5] if key.endswith(".onnx") else key
    if key in INSIGHTFACE_MODELS and INSIGHTFACE_MODELS[key][0] != name.lower():
        raise ValueError(f"{key} is InsightFace's {INSIGHTFACE_MODELS[key][0]}, "
                         f"not {name}")
    return load_insightface_weights(net, insightface_file(spec),
                                    input_scale=FR_LIB_INPUT_SCALE)


# ------------------------------------------------------------ writing -----

def _bn_entries(key, bn, eps=_TORCH_EPS):
    g = bn.gamma.data().asnumpy()
    if bn._kwargs["fix_gamma"]:
        g = np.ones_like(g)
    var = bn.running_var.data().asnumpy() + bn._kwargs["eps"] - eps
    return [(key + ".weight", g), (key + ".bias", bn.beta.data().asnumpy()),
            (key + ".running_mean", bn.running_mean.data().asnumpy()),
            (key + ".running_var", var)]


def insightface_state_dict(net):
    """The arcface_torch state dict of an fr_lib IResNet or mbf.

    Book: introduced in ``chapter_deployment/verification-demo`` (人脸验证演示).

    The inverse of :func:`load_insightface_weights` for ``.pth`` files:
    parameter names of ``backbones/iresnet.py`` (``conv1``, ``layer1.0.bn1``,
    ..., ``fc``, ``features``) or ``backbones/mobilefacenet.py``
    (``layers.0.layers.0``, ..., ``conv_sep``, ``features.layers.3``),
    BatchNorm variances shifted to PyTorch's epsilon.
    """
    from .iresnet import IResNet
    from .mobilefacenet import MobileFaceNet
    out = []

    def conv_bn_act(key, block, act=True):
        out.append((key + ".layers.0.weight", block.conv.weight.data().asnumpy()))
        out.extend(_bn_entries(key + ".layers.1", block.bn))
        if act:
            out.append((key + ".layers.2.weight", block.act.alpha.data().asnumpy()))

    if isinstance(net, IResNet):
        conv, bn, act = net.features[:3]
        out.append(("conv1.weight", conv.weight.data().asnumpy()))
        out.extend(_bn_entries("bn1", bn))
        out.append(("prelu.weight", act.alpha.data().asnumpy()))
        for s, stage in enumerate(net.features[3:]):
            for b, unit in enumerate(stage):
                k = f"layer{s + 1}.{b}."
                bn1, c1, bn2, pr, c2, bn3 = unit.body[:6]
                out.extend(_bn_entries(k + "bn1", bn1))
                out.append((k + "conv1.weight", c1.weight.data().asnumpy()))
                out.extend(_bn_entries(k + "bn2", bn2))
                out.append((k + "prelu.weight", pr.alpha.data().asnumpy()))
                out.append((k + "conv2.weight", c2.weight.data().asnumpy()))
                out.extend(_bn_entries(k + "bn3", bn3))
                if unit.shortcut is not None:
                    out.append((k + "downsample.0.weight",
                                unit.shortcut[0].weight.data().asnumpy()))
                    out.extend(_bn_entries(k + "downsample.1", unit.shortcut[1]))
        head = net.output
        out.extend(_bn_entries("bn2", head.bn))
        out.append(("fc.weight", head.fc.weight.data().asnumpy()))
        out.append(("fc.bias", head.fc.bias.data().asnumpy()))
        out.extend(_bn_entries("features", head.features))
    elif isinstance(net, MobileFaceNet):
        feats = list(net.features)
        conv_bn_act("layers.0", feats[0])
        conv_bn_act("layers.1", feats[1])
        units = feats[2:-2]
        # arcface_torch groups the units: a strided DepthWise, then a Residual
        i, group = 0, 2
        while i < len(units):
            n = 1
            while i + n < len(units) and units[i + n].residual:
                n += 1
            if not units[i].residual:
                keys, n = [f"layers.{group}"], 1
            else:
                keys = [f"layers.{group}.layers.{j}" for j in range(n)]
            for key, unit in zip(keys, units[i:i + n]):
                a, b, c = unit.body
                conv_bn_act(key + ".layers.0", a)
                conv_bn_act(key + ".layers.1", b)
                conv_bn_act(key + ".layers.2", c, act=False)
            i, group = i + n, group + 1
        conv_bn_act("conv_sep", feats[-2])
        conv_bn_act("features.layers.0", feats[-1], act=False)
        w = net.output[0].weight.data().asnumpy()
        out.append(("features.layers.2.weight", w.reshape(w.shape[:2])))
        out.extend(_bn_entries("features.layers.3", net.output[1]))
    else:
        raise TypeError(f"insightface_state_dict: {type(net).__name__} is "
                        "neither an IResNet nor a MobileFaceNet")
    return OrderedDict((k, np.asarray(v, np.float32)) for k, v in out)


def _op_str(s):
    b = s.encode()
    return b"X" + len(b).to_bytes(4, "little") + b


def _op_int(v):
    return b"J" + int(v).to_bytes(4, "little", signed=True)


def save_pth(state_dict, path):
    """Write a float32 state dict as ``torch.save`` does (zip, protocol 2),
    readable by ``torch.load`` and :func:`read_pth`; atomic.

    Book: introduced in ``chapter_deployment/verification-demo`` (人脸验证演示).
    """
    archive = os.path.splitext(os.path.basename(path))[0] or "archive"
    od = b"ccollections\nOrderedDict\n)R"
    body = [b"\x80\x02" + od + b"("]
    for n, (key, arr) in enumerate(state_dict.items()):
        arr = np.array(arr, np.float32, order="C")
        stride = [st // 4 for st in arr.strides]
        storage = (b"(" + _op_str("storage") + b"ctorch\nFloatStorage\n"
                   + _op_str(str(n)) + _op_str("cpu") + _op_int(arr.size) + b"tQ")
        body.append(_op_str(key) + b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage
                    + _op_int(0) + b"(" + b"".join(map(_op_int, arr.shape)) + b"t"
                    + b"(" + b"".join(map(_op_int, stride)) + b"t" + b"\x89" + od
                    + b"tR")
    body.append(b"u.")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                               suffix=".part")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(f"{archive}/data.pkl", b"".join(body))
            zf.writestr(f"{archive}/byteorder", b"little")
            for n, arr in enumerate(state_dict.values()):
                zf.writestr(f"{archive}/data/{n}",
                            np.asarray(arr, "<f4").tobytes())
            zf.writestr(f"{archive}/version", b"3\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
