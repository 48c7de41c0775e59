"""Deployment: export a backbone, run it in ONNX Runtime, verify real faces.

The pieces of a face-verification program, each usable alone:

- :func:`export_model` / :func:`load_exported` -- the backbone (no classifier
  head) as MXNet's ``prefix-symbol.json`` + ``prefix-0000.params``, and back as a
  :class:`mxnet.gluon.SymbolBlock`;
- :func:`export_onnx` -- the same graph as an ONNX file. MXNet 1.9.1's exporter
  predates today's ``onnx``; :func:`onnx_compat` supplies what it needs for the
  duration of one export (see its notes);
- :class:`MXNetEmbedder` / :class:`OnnxEmbedder` -- aligned 112x112 RGB uint8
  faces in, L2-normalised embeddings out, with the package's pixel convention
  (:mod:`fr_lib.data.transforms`) and the optional flip-sum of the
  verification protocol;
- :class:`FaceVerifier` -- detect (OpenCV Haar cascades) -> align to the
  ArcFace template (:func:`fr_lib.data.align_face`) -> embed -> compare the
  squared L2 distance with a threshold.

>>> prefix = export_model(net, 'out/mobilefacenet')
>>> export_onnx(prefix, 'out/mobilefacenet.onnx')
>>> verifier = FaceVerifier(OnnxEmbedder('out/mobilefacenet.onnx'), threshold=1.4)
>>> verifier.verify('a.jpg', 'b.jpg').same
"""
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import types
from dataclasses import dataclass, field

import numpy as np
import mxnet as mx
from mxnet import autograd, gluon

from .native.backend import mxnet_engine
from .data.align import align_face
from .data.transforms import flip_batch, normalize_batch, decode_image
from .utils.fileio import atomic_write_bytes

__all__ = ["INPUT_SHAPE", "ONNX_PIN", "ONNXRUNTIME_PIN", "NoFaceError",
           "export_model", "load_exported", "onnx_compat", "export_onnx",
           "require_onnx", "require_onnxruntime", "l2_normalize",
           "MXNetEmbedder", "OnnxEmbedder", "FaceVerifier", "AlignedFace",
           "VerificationResult"]

#: Shape of the example input used to trace a backbone: one aligned face.
INPUT_SHAPE = (1, 3, 112, 112)
#: The releases this module is tested with (requirements.txt).
ONNX_PIN = "onnx==1.23.2"
ONNXRUNTIME_PIN = "onnxruntime==1.23.2"


class NoFaceError(ValueError):
    """The detector found no face in an image; the message names the image."""


# -- MXNet symbol + params ----------------------------------------------------------

def _backbone(net):
    """The embedding network of ``net``: its ``backbone`` attribute if it has one."""
    inner = getattr(net, "backbone", None)
    return inner if isinstance(inner, gluon.Block) else net


def _paths(prefix, epoch):
    return f"{prefix}-symbol.json", f"{prefix}-{epoch:04d}.params"


def export_model(net, prefix, epoch=0, input_shape=INPUT_SHAPE, ctx=None):
    """Save a backbone as MXNet's symbol file + parameter file.

    Only the embedding network is written: a training head (a
    :class:`~fr_lib.model_zoo.NormDense` and the margin loss) is not part of
    the backbone, so leaving it out is all "stripping the classifier" takes.
    The network is hybridized and traced with one zero batch of
    ``input_shape`` (inference mode: BatchNorm uses its running statistics,
    Dropout is off). Both files are written into a temporary folder beside
    the target and renamed only when both are complete, so an interrupted or
    failed export never leaves half a file, or one file without the other.

    Parameters
    ----------
    net : HybridBlock
        The backbone; a block with a ``backbone`` attribute (a training
        wrapper) is replaced by that attribute.
    prefix : str
        Output path without suffix: writes ``prefix-symbol.json`` and
        ``prefix-{epoch:04d}.params``.
    epoch : int, default 0
    input_shape : tuple of int, default (1, 3, 112, 112)
    ctx : Context or None
        Where to run the trace; defaults to the context of the parameters.

    Returns
    -------
    str
        ``prefix`` (pass it to :func:`load_exported` or :func:`export_onnx`).
    """
    net = _backbone(net)
    if not isinstance(net, gluon.HybridBlock):
        raise TypeError(f"export needs a HybridBlock, got {type(net).__name__}")
    if ctx is None:
        params = list(net.collect_params().values())
        ctx = params[0].list_ctx()[0] if params else mx.cpu()
    # Traced without fr_lib's native operators: the files must load in any
    # MXNet (and convert to ONNX) without fr_lib's compiled library.
    sym_path, params_path = _paths(os.path.abspath(os.path.expanduser(prefix)), epoch)
    folder = os.path.dirname(sym_path)
    os.makedirs(folder, exist_ok=True)
    # both files are written into a hidden folder beside the target and
    # renamed only when both exist: never one without the other
    tmp = tempfile.mkdtemp(prefix=".export-", dir=folder)
    try:
        tmp_prefix = os.path.join(tmp, "model")
        with mxnet_engine(net), autograd.predict_mode():
            net.hybridize()
            net(mx.nd.zeros(input_shape, ctx=ctx))
            net.export(tmp_prefix, epoch)
        tmp_sym, tmp_params = _paths(tmp_prefix, epoch)
        for src in (tmp_params, tmp_sym):
            with open(src, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp_params, params_path)
        os.replace(tmp_sym, sym_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    net.hybridize()  # the next call traces again, with its own blocks
    return prefix


def load_exported(prefix, epoch=0, ctx=None):
    """Load what :func:`export_model` wrote as a :class:`~mxnet.gluon.SymbolBlock`.

    Parameters
    ----------
    prefix : str
    epoch : int, default 0
    ctx : Context or None
        Defaults to the CPU.

    Returns
    -------
    mxnet.gluon.SymbolBlock
        Input ``data`` of shape ``(N, 3, 112, 112)``, output the embeddings.

    Raises
    ------
    FileNotFoundError
        When the symbol or parameter file is missing (the message names it).
    """
    sym_path, params_path = _paths(prefix, epoch)
    for path in (sym_path, params_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no exported model file {path!r}; write it "
                                    "with fr_lib.deploy.export_model(net, prefix)")
    import warnings
    with warnings.catch_warnings():  # SymbolBlock warns about unused inputs
        warnings.simplefilter("ignore")
        return gluon.SymbolBlock.imports(sym_path, ["data"], params_path,
                                         ctx=ctx or mx.cpu())


# -- ONNX -----------------------------------------------------------------------------

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


# -- embedders ------------------------------------------------------------------------

def l2_normalize(x, eps=1e-12):
    """Rows of ``x`` divided by their L2 norm (float32)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.sqrt(np.maximum((x * x).sum(axis=-1, keepdims=True), eps))


class _Embedder:
    """Shared checks, batching, pixel convention and flip-sum."""

    def __init__(self, flip=True, batch_size=64, size=112):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.flip, self.batch_size, self.size = bool(flip), int(batch_size), size

    def _check(self, faces):
        if isinstance(faces, mx.nd.NDArray):
            faces = faces.asnumpy()
        faces = np.asarray(faces)
        if faces.ndim == 3:
            faces = faces[None]
        if faces.ndim != 4 or faces.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"expected aligned faces of shape (N, {self.size}, "
                             f"{self.size}, 3) or ({self.size}, {self.size}, 3), "
                             f"got {faces.shape}; align them with "
                             "fr_lib.data.align_face or FaceVerifier.align")
        if faces.dtype != np.uint8:
            raise ValueError(f"expected uint8 RGB faces (0..255), got {faces.dtype}")
        return faces

    def features(self, x):
        """Raw backbone outputs of a normalised float32 NCHW batch (numpy)."""
        raise NotImplementedError

    def __call__(self, faces):
        """L2-normalised embeddings of aligned faces.

        Parameters
        ----------
        faces : numpy.ndarray or NDArray
            ``(N, 112, 112, 3)`` or ``(112, 112, 3)`` uint8 RGB, aligned.

        Returns
        -------
        numpy.ndarray, shape (N, D), float32
            With ``flip``, ``normalize(f(x) + f(mirror(x)))``, else
            ``normalize(f(x))``.
        """
        faces = self._check(faces)
        out = []
        for i in range(0, len(faces), self.batch_size):
            chunk = faces[i:i + self.batch_size]
            emb = self.features(normalize_batch(chunk))
            if self.flip:
                emb = emb + self.features(normalize_batch(flip_batch(chunk)))
            out.append(emb)
        return l2_normalize(np.concatenate(out))

    embed = __call__


class MXNetEmbedder(_Embedder):
    """Embeddings from an MXNet backbone (a Gluon block or exported files).

    Parameters
    ----------
    net : Block or str
        A backbone, or a prefix written by :func:`export_model`.
    ctx : Context or None
        Defaults to the CPU.
    flip : bool, default True
        Add the embedding of the mirrored face before normalising (the
        verification protocol of :mod:`fr_lib.metrics.verification`).
    batch_size : int, default 64
    epoch : int, default 0
        Epoch of the parameter file when ``net`` is a prefix.
    """

    def __init__(self, net, ctx=None, flip=True, batch_size=64, epoch=0):
        super().__init__(flip, batch_size)
        self.ctx = ctx or mx.cpu()
        self.net = load_exported(net, epoch, self.ctx) if isinstance(net, str) \
            else _backbone(net)

    def features(self, x):
        """Raw outputs for a normalised float32 NCHW batch."""
        with autograd.predict_mode():
            return self.net(mx.nd.array(x, ctx=self.ctx)).asnumpy()


class OnnxEmbedder(_Embedder):
    """Embeddings from an ONNX file run by ONNX Runtime (CPU by default).

    Parameters
    ----------
    model : str or bytes
        Path of an ``.onnx`` file, or its serialised bytes.
    flip : bool, default True
        See :class:`MXNetEmbedder`.
    batch_size : int, default 64
        Largest batch sent to the session; a model exported with a fixed
        batch size gets batches of exactly that size (the last one padded).
    num_threads : int or None
        Threads of one operator (``intra_op_num_threads``); None lets ONNX
        Runtime choose (one per core).
    providers : sequence of str, default ('CPUExecutionProvider',)

    Raises
    ------
    ImportError
        When onnxruntime is not installed (the message has the pip command).
    """

    def __init__(self, model, flip=True, batch_size=64, num_threads=None,
                 providers=("CPUExecutionProvider",)):
        super().__init__(flip, batch_size)
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
        if isinstance(model, str) and not os.path.isfile(model):
            raise FileNotFoundError(f"no ONNX file {model!r}; write it with "
                                    "fr_lib.deploy.export_onnx")
        self.session = ort.InferenceSession(model, options,
                                            providers=list(providers))
        spec = self.session.get_inputs()[0]
        self.input_name = spec.name
        self.fixed_batch = spec.shape[0] if isinstance(spec.shape[0], int) else None

    def features(self, x):
        """Raw outputs for a normalised float32 NCHW batch."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.fixed_batch is None:
            return self.session.run(None, {self.input_name: x})[0]
        b, out = self.fixed_batch, []
        for i in range(0, len(x), b):
            chunk = x[i:i + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n,) + x.shape[1:],
                                                        np.float32)])
            out.append(self.session.run(None, {self.input_name: chunk})[0][:n])
        return np.concatenate(out)


# -- detect -> align -> embed -> compare ---------------------------------------

@dataclass
class AlignedFace:
    """One detected and aligned face.

    Attributes
    ----------
    name : str
        The image's name (a path, or the name given).
    face : numpy.ndarray, (112, 112, 3) uint8
        The aligned face.
    box : tuple of int
        ``(x, y, w, h)`` of the detected face.
    eyes : numpy.ndarray, (2, 2)
        Eye centres used for the alignment (image coordinates).
    how : str
        ``'eyes'`` (eye cascade) or ``'box'`` (eyes guessed from the box).
    matrix : numpy.ndarray, (2, 3)
        The similarity transform from image to aligned coordinates.
    """
    name: str
    face: np.ndarray
    box: tuple
    eyes: np.ndarray
    how: str
    matrix: np.ndarray = None


@dataclass
class VerificationResult:
    """Outcome of :meth:`FaceVerifier.verify`.

    Attributes
    ----------
    distance : float
        Squared L2 distance of the two normalised embeddings, in [0, 4].
    cosine : float
        Cosine similarity, ``1 - distance / 2``.
    threshold : float
    same : bool
        ``distance < threshold``.
    faces : tuple of AlignedFace
    """
    distance: float
    cosine: float
    threshold: float
    same: bool
    faces: tuple = field(default_factory=tuple)

    def __str__(self):
        verdict = "same person" if self.same else "different people"
        return (f"{verdict}: distance {self.distance:.3f} "
                f"{'<' if self.same else '>='} threshold {self.threshold:.3f} "
                f"(cosine {self.cosine:.3f})")


class FaceVerifier:
    """Face verification on ordinary photos: detect, align, embed, compare.

    Detection uses OpenCV's Haar cascades (:class:`fr_lib.data.tools.FaceEyeDetector`:
    the largest frontal face and its two eyes; if the eyes are not found they
    are placed where they usually are in the face box). The eye centres are
    mapped onto the ArcFace template's eyes by a similarity transform
    (:func:`fr_lib.data.align_face`), the aligned face is embedded, and two
    faces are "the same person" when the squared L2 distance of their
    normalised embeddings is below ``threshold`` -- the rule and the scale of
    :mod:`fr_lib.metrics.verification`, so a threshold chosen there applies.

    Parameters
    ----------
    embedder : MXNetEmbedder or OnnxEmbedder
        Or any callable mapping (N, 112, 112, 3) uint8 faces to normalised
        embeddings.
    threshold : float, default 1.4
        Squared L2 distance in [0, 4]. 1.4 (cosine 0.3) is in the range that
        ArcFace-trained models reach on LFW; use the value that
        :func:`fr_lib.metrics.verification_accuracy` picks for your model.
    detector : callable or None
        ``detector(rgb) -> (box or None, eyes (2, 2) or None)``; defaults to
        :class:`fr_lib.data.tools.FaceEyeDetector`.
    """

    def __init__(self, embedder, threshold=1.4, detector=None):
        if not 0 <= threshold <= 4:
            raise ValueError(f"threshold is a squared L2 distance in [0, 4], "
                             f"got {threshold}")
        self.embedder, self.threshold = embedder, float(threshold)
        if detector is None:
            from .data.tools import FaceEyeDetector
            detector = FaceEyeDetector()
        self.detector = detector

    @staticmethod
    def _read(image, name):
        if isinstance(image, (str, os.PathLike)):
            name = name or os.fspath(image)
            try:
                with open(image, "rb") as f:
                    img = decode_image(f.read())
            except OSError as err:
                raise FileNotFoundError(f"cannot read image {name}: "
                                        f"{err.strerror or err}") from err
            if img is None:
                raise ValueError(f"{name} is not a decodable image")
        else:
            img = image.asnumpy() if isinstance(image, mx.nd.NDArray) else image
            img = np.asarray(img)
            name = name or "image"
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"{name}: expected an RGB image (H, W, 3), got "
                             f"shape {img.shape}")
        if img.dtype != np.uint8:
            raise ValueError(f"{name}: expected uint8 pixels, got {img.dtype}")
        return np.ascontiguousarray(img), name

    def align(self, image, name=None):
        """Detect the largest face of an image and align it.

        Parameters
        ----------
        image : str or numpy.ndarray
            A path, or an (H, W, 3) uint8 RGB array (grey (H, W) is expanded).
        name : str or None
            Used in messages; defaults to the path or ``'image'``.

        Returns
        -------
        AlignedFace

        Raises
        ------
        NoFaceError
            When no face is found; the message names the image.
        """
        from .data.tools import eyes_from_box
        img, name = self._read(image, name)
        box, eyes = self.detector(img)
        if box is None:
            raise NoFaceError(f"no face found in {name} ({img.shape[1]}x"
                              f"{img.shape[0]} pixels); the Haar detector needs "
                              "a frontal face of at least ~40 pixels")
        how = "eyes"
        if eyes is None:
            eyes, how = eyes_from_box(box), "box"
        face, matrix = align_face(img, eyes, size=112)
        return AlignedFace(name, face, tuple(int(v) for v in box),
                           np.asarray(eyes, np.float64), how, matrix)

    def embed(self, image, name=None):
        """Aligned face and its normalised embedding ``(D,)``."""
        aligned = self.align(image, name)
        return aligned, np.asarray(self.embedder(aligned.face[None]))[0]

    def compare(self, emb1, emb2):
        """:class:`VerificationResult` of two normalised embeddings."""
        e1 = l2_normalize(np.asarray(emb1, np.float64).reshape(-1))
        e2 = l2_normalize(np.asarray(emb2, np.float64).reshape(-1))
        cosine = float(np.clip(np.dot(e1, e2), -1.0, 1.0))
        distance = 2.0 - 2.0 * cosine
        return VerificationResult(distance, cosine, self.threshold,
                                  distance < self.threshold)

    def verify(self, image1, image2, names=(None, None)):
        """Are the faces of two images the same person?

        Parameters
        ----------
        image1, image2 : str or numpy.ndarray
            Paths or (H, W, 3) uint8 RGB arrays.
        names : tuple of str or None
            Names for messages and the result.

        Returns
        -------
        VerificationResult
        """
        a1, e1 = self.embed(image1, names[0] or ("image 1" if not isinstance(
            image1, (str, os.PathLike)) else None))
        a2, e2 = self.embed(image2, names[1] or ("image 2" if not isinstance(
            image2, (str, os.PathLike)) else None))
        result = self.compare(e1, e2)
        result.faces = (a1, a2)
        return result
