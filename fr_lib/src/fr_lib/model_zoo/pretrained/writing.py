"""The inverse direction: an fr_lib IResNet or MobileFaceNet as arcface_torch's
state dict (:func:`insightface_state_dict`), written as ``torch.save`` writes
it (:func:`save_pth`).
"""
import os
import tempfile
import zipfile
from collections import OrderedDict

import numpy as np

from .formats import _TORCH_EPS

__all__ = ["insightface_state_dict", "save_pth"]


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
    from ..iresnet import IResNet
    from ..mobilefacenet import MobileFaceNet
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
