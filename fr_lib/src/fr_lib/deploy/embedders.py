"""Aligned faces in, L2-normalised embeddings out: from MXNet or ONNX Runtime.

:class:`MXNetEmbedder` (a Gluon block or exported files) and
:class:`OnnxEmbedder` (an ``.onnx`` file) share the input checks, the pixel
convention of :mod:`fr_lib.data.transforms` and the flip-sum of the
verification protocol; the network is run by :func:`fr_lib.metrics.embed`,
the same function the verification evaluator uses. Taught in ``chapter_deployment/export-onnx`` and
``chapter_deployment/verification-demo``.
"""
import os

import numpy as np
import mxnet as mx
from mxnet import autograd

from ..data.transforms import normalize_batch
# l2_normalize is re-exported here (fr_lib.deploy.l2_normalize): one normaliser
from ..metrics.embedding import embed, l2_normalize
from .export import _backbone, load_exported
from .onnx_export import require_onnxruntime

__all__ = ["l2_normalize", "MXNetEmbedder", "OnnxEmbedder"]


class _Pixels:
    """uint8 NHWC faces seen as the float32 NCHW batches a backbone takes,
    converted one slice at a time (so a large set is never held twice)."""

    def __init__(self, faces):
        self.faces = faces

    def __len__(self):
        return len(self.faces)

    def __getitem__(self, index):
        return normalize_batch(self.faces[index])


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

    def _runner(self):
        """``(net, ctx)`` for :func:`fr_lib.metrics.embed`: ``net`` takes an
        NDArray batch on ``ctx``."""
        return (lambda x: self.features(x.asnumpy())), mx.cpu()

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
        net, ctx = self._runner()
        emb, flipped = embed(net, _Pixels(self._check(faces)), flip=self.flip,
                             batch_size=self.batch_size, ctx=ctx)
        emb = emb if flipped is None else emb + flipped
        return l2_normalize(emb.astype(np.float32, copy=False))

    embed = __call__


class MXNetEmbedder(_Embedder):
    """Embeddings from an MXNet backbone (a Gluon block or exported files).

    Book: introduced in ``chapter_deployment/export-onnx`` (导出模型与 ONNX).

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

    def _runner(self):
        return self.net, self.ctx


class OnnxEmbedder(_Embedder):
    """Embeddings from an ONNX file run by ONNX Runtime (CPU by default).

    Book: introduced in ``chapter_deployment/export-onnx`` (导出模型与 ONNX).

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
