"""Putting InsightFace weights into an fr_lib network: the source layers matched
one by one against the network's, shapes checked, BatchNorm epsilons and
scales absorbed (:func:`load_insightface_weights`), and
``get_model(..., pretrained=...)`` (:func:`load_pretrained`).
"""
import os

import numpy as np

from .files import INSIGHTFACE_MODELS, insightface_file
from .formats import source_layers

__all__ = ["load_insightface_weights", "load_pretrained"]

# fr_lib normalises pixels by 128, InsightFace by 127.5
FR_LIB_INPUT_SCALE = 128 / 127.5


def _target_layers(block):
    """fr_lib's conv / BN / PReLU / dense blocks in registration order (the
    forward order for the backbones this module supports)."""
    from mxnet.gluon import nn
    from ..layers import PReLU
    kinds = ((nn.Conv2D, "conv"), (nn.BatchNorm, "bn"), ((PReLU, nn.PReLU), "prelu"),
             (nn.Dense, "dense"))
    out = []

    def visit(b):  # Block.apply: every child (in registration order) before its parent
        kind = next((k for cls, k in kinds if isinstance(b, cls)), None)
        if kind is not None and b is not block:
            out.append((kind, b))
    block.apply(visit)
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


