"""Reading InsightFace's two weight formats without PyTorch: the zip ``.pth``
state dicts of arcface_torch (:func:`read_pth`, a restricted unpickler) and
the ``.onnx`` recognition models of the model packs (:func:`read_onnx`), both
reduced to one list of layers in forward order (:func:`source_layers`).
"""
import io
import pickle
import zipfile
from collections import OrderedDict

import numpy as np

__all__ = ["read_pth", "read_onnx", "source_layers"]

_TORCH_EPS = 1e-5
# fr_lib normalises pixels by 128, InsightFace by 127.5
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

