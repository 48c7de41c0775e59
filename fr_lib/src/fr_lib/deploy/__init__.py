"""Deployment: export a backbone, run it in ONNX Runtime, verify real faces.

The pieces of a face-verification program, each usable alone, one module per
responsibility (every public name is importable from ``fr_lib.deploy``):

- :mod:`fr_lib.deploy.export` -- :func:`export_model` / :func:`load_exported`:
  the backbone (no classifier head) as MXNet's ``prefix-symbol.json`` +
  ``prefix-0000.params``, and back as a :class:`mxnet.gluon.SymbolBlock`;
- :mod:`fr_lib.deploy.onnx_export` -- :func:`export_onnx`: the same graph as
  an ONNX file. MXNet 1.9.1's exporter predates today's ``onnx``;
  :func:`onnx_compat` supplies what it needs for the duration of one export;
- :mod:`fr_lib.deploy.embedders` -- :class:`MXNetEmbedder` /
  :class:`OnnxEmbedder`: aligned 112x112 RGB uint8 faces in, L2-normalised
  embeddings out, with the package's pixel convention
  (:mod:`fr_lib.data.transforms`) and the optional flip-sum of the
  verification protocol;
- :mod:`fr_lib.deploy.verifier` -- :class:`FaceVerifier`: detect (OpenCV
  Haar cascades) -> align to the ArcFace template
  (:func:`fr_lib.data.align_face`) -> embed -> compare the squared L2
  distance with a threshold.

Taught in the deployment chapter (``chapter_deployment``).

>>> prefix = export_model(net, 'out/mobilefacenet')
>>> export_onnx(prefix, 'out/mobilefacenet.onnx')
>>> verifier = FaceVerifier(OnnxEmbedder('out/mobilefacenet.onnx'), threshold=1.4)
>>> verifier.verify('a.jpg', 'b.jpg').same
"""
from .export import INPUT_SHAPE, export_model, load_exported
from .export import _backbone, _paths  # noqa: F401  (used by fr_lib.cli)
from .onnx_export import (ONNX_PIN, ONNXRUNTIME_PIN, require_onnx,
                          require_onnxruntime, onnx_compat, export_onnx)
from .embedders import l2_normalize, MXNetEmbedder, OnnxEmbedder
from .verifier import NoFaceError, AlignedFace, VerificationResult, FaceVerifier

__all__ = ["INPUT_SHAPE", "ONNX_PIN", "ONNXRUNTIME_PIN", "NoFaceError",
           "export_model", "load_exported", "onnx_compat", "export_onnx",
           "require_onnx", "require_onnxruntime", "l2_normalize",
           "MXNetEmbedder", "OnnxEmbedder", "FaceVerifier", "AlignedFace",
           "VerificationResult"]
