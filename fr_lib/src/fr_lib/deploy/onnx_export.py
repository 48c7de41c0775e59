"""Export a backbone to ONNX with MXNet 1.9.1's exporter and today's ``onnx``.

MXNet 1.9.1's exporter predates the ``onnx`` releases installed today;
:func:`onnx_compat` supplies what it needs for the duration of one export
(``onnx.mapping``, the opset it knows, two corrected converters and a fast
weight converter) and restores everything afterwards. :func:`export_onnx`
runs it and finishes the model (opset, IR version, weights out of the graph
inputs). Taught in ``chapter_deployment/export-onnx``.
"""
import contextlib
import os
import sys
import tempfile
import threading
import types

import numpy as np

from ..utils.fileio import atomic_write_bytes
from .export import INPUT_SHAPE, _paths, export_model

__all__ = ["ONNX_PIN", "ONNXRUNTIME_PIN", "require_onnx", "require_onnxruntime",
           "onnx_compat", "export_onnx"]

#: The releases this module is tested with (requirements.txt).
ONNX_PIN = "onnx==1.23.2"
ONNXRUNTIME_PIN = "onnxruntime==1.23.2"


def require_onnx():
    """Import ``onnx`` or raise an ImportError with the pip command."""
    try:
        import onnx
    except ImportError as err:
        raise ImportError(f"exporting to ONNX needs the onnx package: "
                          f"pip install {ONNX_PIN}") from err
    return onnx


def require_onnxruntime():
    """Import ``onnxruntime`` or raise an ImportError with the pip command."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(f"running ONNX models needs onnxruntime: "
                          f"pip install {ONNXRUNTIME_PIN}") from err
    return onnxruntime


def _mapping_module(onnx):
    """A stand-in for ``onnx.mapping`` (deprecated, then removed from onnx)
    built from ``onnx.helper``: the two dictionaries MXNet's exporter reads."""
    to_np = {}
    for t in sorted(onnx.TensorProto.DataType.values()):
        try:
            to_np[t] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t))
        except (KeyError, TypeError, ValueError):
            continue
    to_tensor = {}
    for t, dtype in to_np.items():  # lowest enum wins: float32 -> FLOAT
        to_tensor.setdefault(dtype, t)
    module = types.ModuleType("onnx.mapping")
    module.TENSOR_TYPE_TO_NP_TYPE = to_np
    module.NP_TYPE_TO_TENSOR_TYPE = to_tensor
    return module


def _scalar_first(op_type):
    """Converter for ``scalar - x`` / ``scalar / x`` (``_rminus_scalar``,
    ``_rdiv_scalar``). MXNet 1.9.1's own one recognises the reversed order
    only when the node's name *starts* with ``_rminusscalar``; Gluon names it
    ``prefix_rminusscalar0``, so ``1 - alpha`` was exported as ``alpha - 1``."""
    def convert(node, **kwargs):
        import onnx
        from mxnet.onnx.mx2onnx._op_translations._op_translations_opset12 import (
            get_inputs, get_input_dtypes)
        name, inputs, attrs = get_inputs(node, kwargs)
        dtype = np.dtype(get_input_dtypes(node, kwargs)[0])
        value = np.array(float(attrs.get("scalar", "1")), dtype=dtype)
        const = name + "_scalar"
        kwargs["initializer"].append(onnx.numpy_helper.from_array(value, const))
        return [onnx.helper.make_node(op_type, [const, inputs[0]], [name],
                                      name=name)]
    return convert


def _weights_raw(original):
    """Converter of parameter nodes that stores weights as raw bytes.

    MXNet's own one passes every weight through a Python list
    (``make_tensor(vals=arr.flatten().tolist())``): 26 s for the 24 M
    parameters of IResNet-18 here, against well under a second this way.
    Graph inputs (the image) go to the original converter."""
    def convert(node, **kwargs):
        if kwargs["is_input"]:
            return original(node, **kwargs)
        import onnx
        from onnx import numpy_helper
        name = node["name"]
        arr = np.ascontiguousarray(kwargs["weights"][name])
        kwargs["initializer"].append(numpy_helper.from_array(arr, name))
        dtype_t = onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
        value = onnx.helper.make_tensor_value_info(name, dtype_t, arr.shape)
        return [value], (arr.dtype,)
    return convert


_ONNX_LOCK = threading.RLock()


@contextlib.contextmanager
def onnx_compat(opset=13):
    """Let MXNet 1.9.1's ONNX exporter run with the installed ``onnx``.

    Inside the ``with`` block, and only there:

    - ``onnx.mapping`` exists again (built from ``onnx.helper``) if the
      installed onnx no longer has it;
    - ``onnx.defs.onnx_opset_version()`` returns ``opset``: the exporter asks
      it which opset to target, and knows nothing newer than 13;
    - ``_rminus_scalar`` and ``_rdiv_scalar`` use a corrected converter (see
      ``_scalar_first``), and weights are stored as raw bytes (see
      ``_weights_raw``).

    Everything is restored on exit, also after an error, so a later export
    (or other code using onnx) sees the library unchanged.

    Parameters
    ----------
    opset : int, default 13
        12 or 13, the opsets MXNet 1.9.1 has converters for.

    Yields
    ------
    module
        ``mxnet.onnx``.
    """
    if opset not in (12, 13):
        raise ValueError(f"MXNet 1.9.1 exports ONNX opset 12 or 13, got {opset}")
    onnx = require_onnx()
    import onnx.defs
    with _ONNX_LOCK:
        try:
            import onnx.mapping  # noqa: F401  (older onnx still has it)
            need_shim = False
        except ImportError:
            need_shim = True
        saved_version = onnx.defs.onnx_opset_version
        if need_shim:
            shim = _mapping_module(onnx)
            onnx.mapping = shim
            sys.modules["onnx.mapping"] = shim
        onnx.defs.onnx_opset_version = lambda: opset
        registry = None
        saved_ops = {}
        try:
            import mxnet.onnx as mx_onnx
            from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
            registry = MXNetGraph.registry_.setdefault(opset, {})
            fixes = {"_rminus_scalar": _scalar_first("Sub"),
                     "_rdiv_scalar": _scalar_first("Div"),
                     "null": _weights_raw(MXNetGraph.registry_[12]["null"])}
            for op, func in fixes.items():
                saved_ops[op] = registry.get(op)
                registry[op] = func
            yield mx_onnx
        finally:
            if registry is not None:
                for op, func in saved_ops.items():
                    if func is None:
                        registry.pop(op, None)
                    else:
                        registry[op] = func
            onnx.defs.onnx_opset_version = saved_version
            if need_shim:
                onnx.__dict__.pop("mapping", None)
                sys.modules.pop("onnx.mapping", None)


def _check_prelu(sym_path):
    """Refuse ``nn.PReLU`` (LeakyReLU act_type=prelu): MXNet exports its
    per-channel slope with shape (C,), which ONNX broadcasts over the last
    axis (width), not the channels."""
    import json
    with open(sym_path, encoding="utf-8") as f:
        nodes = json.load(f)["nodes"]
    bad = [n["name"] for n in nodes if n["op"] == "LeakyReLU"
           and n.get("attrs", {}).get("act_type") == "prelu"]
    if bad:
        raise ValueError(
            f"{len(bad)} nn.PReLU layer(s) (e.g. {bad[0]}) cannot be exported to "
            "ONNX correctly by MXNet 1.9.1; build the backbone with "
            "fast_prelu=True (the same parameters: load_parameters works) and "
            "export that")


def _finish_onnx(model, opset, onnx):
    """Declare the opset actually used, the matching IR version, and keep the
    weights out of the graph inputs (so runtimes may fold them)."""
    del model.opset_import[:]
    model.opset_import.append(onnx.helper.make_opsetid("", opset))
    model.ir_version = onnx.helper.find_min_ir_version_for(
        list(model.opset_import))
    weights = {t.name for t in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.producer_name = "fr_lib (mxnet.onnx)"
    onnx.checker.check_model(model)
    return model


def export_onnx(net_or_prefix, path, opset=13, input_shape=INPUT_SHAPE,
                dynamic_batch=True, epoch=0):
    """Export a backbone to an ONNX file with MXNet's exporter.

    Book: introduced in ``chapter_deployment/export-onnx`` (导出模型与 ONNX).

    Parameters
    ----------
    net_or_prefix : HybridBlock or str
        A backbone (exported first with :func:`export_model` to a temporary
        folder) or the prefix of files :func:`export_model` wrote.
    path : str
        The ``.onnx`` file to write (atomically).
    opset : int, default 13
        ONNX opset, 12 or 13.
    input_shape : tuple of int, default (1, 3, 112, 112)
    dynamic_batch : bool, default True
        Leave the batch axis open (``N``), so one file serves any batch size.
    epoch : int, default 0
        Epoch number in the parameter file name when a prefix is given.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ImportError
        When onnx is missing (the message has the pip command).
    ValueError
        For an unsupported opset, or a backbone with ``nn.PReLU`` layers.
    """
    onnx = require_onnx()
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(net_or_prefix, str):
            prefix = net_or_prefix
        else:
            prefix = export_model(net_or_prefix, os.path.join(tmp, "model"),
                                  input_shape=input_shape)
            epoch = 0
        sym_path, params_path = _paths(prefix, epoch)
        for p in (sym_path, params_path):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"no exported model file {p!r}")
        _check_prelu(sym_path)
        out = os.path.join(tmp, "model.onnx")
        dynamic = dict(dynamic=True,
                       dynamic_input_shapes=[(None,) + tuple(input_shape[1:])]) \
            if dynamic_batch else {}
        with onnx_compat(opset) as mx_onnx:
            mx_onnx.export_model(sym_path, params_path, [tuple(input_shape)],
                                 np.float32, out, **dynamic)
        model = _finish_onnx(onnx.load(out), opset, onnx)
        atomic_write_bytes(path, model.SerializeToString())
    return path
