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
# Four parts: formats.py (reading .pth and .onnx), loading.py (matching the
# layers into an fr_lib network), files.py (names, downloads, the cache),
# writing.py (an fr_lib network as a .pth).
from .files import INSIGHTFACE_MODELS, INSIGHTFACE_URL, insightface_file
from .formats import read_onnx, read_pth, source_layers
from .loading import (FR_LIB_INPUT_SCALE, load_insightface_weights,  # noqa: F401
                      load_pretrained)
from .writing import insightface_state_dict, save_pth

__all__ = ["INSIGHTFACE_MODELS", "INSIGHTFACE_URL", "read_pth", "read_onnx",
           "source_layers", "load_insightface_weights", "insightface_file",
           "load_pretrained", "insightface_state_dict", "save_pth"]
