"""Export a backbone as MXNet's symbol + parameter files, and load it back.

:func:`export_model` writes only the embedding network (no classifier head) as
``prefix-symbol.json`` + ``prefix-0000.params``; :func:`load_exported` reads
them back as a :class:`mxnet.gluon.SymbolBlock`. Taught in the deployment
chapter, section "导出模型与 ONNX" (``chapter_deployment/export-onnx``).
"""
import os
import shutil
import tempfile

import mxnet as mx
from mxnet import autograd, gluon

from ..native.backend import mxnet_engine

__all__ = ["INPUT_SHAPE", "export_model", "load_exported"]

#: Shape of the example input used to trace a backbone: one aligned face.
INPUT_SHAPE = (1, 3, 112, 112)


def _backbone(net):
    """The embedding network of ``net``: its ``backbone`` attribute if it has one."""
    inner = getattr(net, "backbone", None)
    return inner if isinstance(inner, gluon.Block) else net


def _paths(prefix, epoch):
    return f"{prefix}-symbol.json", f"{prefix}-{epoch:04d}.params"


def export_model(net, prefix, epoch=0, input_shape=INPUT_SHAPE, ctx=None):
    """Save a backbone as MXNet's symbol file + parameter file.

    Book: introduced in ``chapter_deployment/export-onnx`` (导出模型与 ONNX).

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

    Book: introduced in ``chapter_deployment/export-onnx`` (导出模型与 ONNX).

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
