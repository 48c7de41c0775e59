"""Parameter and multiply-add counts, read from a network's symbolic graph.

Any :class:`~mxnet.gluon.HybridBlock` works: it is called once on
``mx.sym.var('data')`` (nothing is initialised or computed), the shapes of
every node are inferred, and the counts are summed over the graph nodes.

Conventions (those of the papers quoted in the model zoo):

- *multiply-adds* (MAdds) per image; FLOPs as often printed are 2 x MAdds;
- counted: ``Convolution`` (any groups, so depthwise too),
  ``Deconvolution`` and ``FullyConnected`` -- the weight products; biases,
  activations, pooling, resizing and element-wise sums are not counted
  (about one operation per activation: ~3 % of MobileFaceNet's
  multiply-adds, well under 1 % of a ResNet's);
- ``BatchNorm`` is *not* in the total (at inference it folds into the
  preceding layer); ``count_flops(..., by_op=True)`` reports it separately
  as one multiply-add per output element;
- parameters: every learnable array, BatchNorm's gamma and beta included
  (also a gamma fixed at 1), BatchNorm's running mean and variance excluded
  -- the convention of PyTorch's ``parameters()`` behind published counts.
"""
import json
import re
from collections import OrderedDict, namedtuple

import mxnet as mx
import numpy as np

from ..native.backend import mxnet_engine

__all__ = ["count_params", "count_flops", "model_table", "ModelRow",
           "T4_FP32_FLOPS", "training_time"]

# NVIDIA T4 (Colab's usual GPU), peak fp32 FLOP/s from its datasheet.
T4_FP32_FLOPS = 8.1e12

ModelRow = namedtuple("ModelRow", ["name", "embedding", "params_m", "madds_g"])

_COUNTED = ("Convolution", "Deconvolution", "FullyConnected")


def _symbol(net):
    # the model's own layers, not fr_lib's native CPU forms of them
    with mxnet_engine(net):
        out = net(mx.sym.var("data"))
    if isinstance(out, (list, tuple)):
        out = mx.sym.Group(list(out))
    return out


def _shapes(sym, input_shape):
    """Shape of every named output of every node, inputs and weights included."""
    internals = sym.get_internals()
    _, out_shapes, _ = internals.infer_shape(data=tuple(input_shape))
    if out_shapes is None:
        raise ValueError(f"cannot infer shapes for input shape {input_shape}")
    return dict(zip(internals.list_outputs(), out_shapes))


def count_params(net, input_shape=(1, 3, 112, 112), include_aux=False):
    """Number of learnable parameters of ``net``.

    Book: introduced in ``chapter_backbone/iresnet`` (从 ResNet 到 IResNet).

    Parameters
    ----------
    net : HybridBlock
        Need not be initialised; shapes come from ``input_shape``.
    input_shape : tuple, default (1, 3, 112, 112)
        Used only to infer deferred parameter shapes.
    include_aux : bool, default False
        Also count auxiliary states (BatchNorm running mean and variance).
    """
    sym = _symbol(net)
    arg_shapes, _, aux_shapes = sym.infer_shape(data=tuple(input_shape))
    total = sum(int(np.prod(s)) for name, s in zip(sym.list_arguments(), arg_shapes)
                if name != "data")
    if include_aux:
        total += sum(int(np.prod(s)) for s in aux_shapes)
    return total


def count_flops(net, input_shape=(1, 3, 112, 112), by_op=False):
    """Multiply-adds per image of one forward pass of ``net``.

    Book: introduced in ``chapter_loss/loss-comparison`` (比较：同一份数据上的所有损失).

    For a convolution with weight ``(C_out, C_in / groups, k_h, k_w)`` and
    output ``(N, C_out, H, W)`` the count is ``weight.size * H * W``; for a
    fully connected layer it is ``weight.size`` per output row. See the
    module docstring for what is and is not counted.

    Parameters
    ----------
    net : HybridBlock
    input_shape : tuple, default (1, 3, 112, 112)
        The count is divided by ``input_shape[0]``.
    by_op : bool, default False
        Return an ordered dict ``{op: MAdds}`` with ``'total'`` (the counted
        ops) and ``'BatchNorm'`` (not part of the total) instead of an int.
    """
    sym = _symbol(net)
    shapes = _shapes(sym, input_shape)
    nodes = json.loads(sym.tojson())["nodes"]
    batch = int(input_shape[0])
    counts = OrderedDict((op, 0) for op in _COUNTED)
    counts["BatchNorm"] = 0

    def output_shape(node):
        name = node["name"]
        for key in (f"{name}_output", f"{name}_output0"):
            if key in shapes:
                return shapes[key]
        raise KeyError(f"no inferred shape for node {name}")

    for node in nodes:
        op = node["op"]
        if op in _COUNTED:
            weight = shapes[nodes[node["inputs"][1][0]]["name"]]
            if op == "Deconvolution":
                # Each input pixel scatters the whole (C_in, C_out/g, k, k) kernel.
                data = nodes[node["inputs"][0][0]]
                in_shape = shapes.get(data["name"]) or output_shape(data)
                positions = int(np.prod(in_shape[2:]))
            else:
                out = output_shape(node)
                positions = int(np.prod(out)) // (out[0] * weight[0])
            counts[op] += int(np.prod(weight)) * positions * batch
        elif op == "BatchNorm":
            counts[op] += int(np.prod(output_shape(node)))
    result = OrderedDict((op, n // batch) for op, n in counts.items())
    result["total"] = sum(result[op] for op in _COUNTED)
    return result if by_op else result["total"]


def model_table(names=None, input_shape=(1, 3, 112, 112), **kwargs):
    """Build each registered model and measure it.

    Book: introduced in ``chapter_backbone/iresnet`` (从 ResNet 到 IResNet).

    Parameters
    ----------
    names : list of str, optional
        Registered model names; default every face model (all but LeNet++).
    input_shape : tuple, default (1, 3, 112, 112)
    **kwargs
        Passed to every factory (e.g. ``embedding_size=512``).

    Returns
    -------
    list of ModelRow
        ``(name, embedding, params_m, madds_g)``: embedding size read from the
        output shape, parameters in millions, multiply-adds in billions.
    """
    from . import get_model, get_model_list

    if names is None:
        # Face models only (LeNet++ takes 28x28 digits), in natural order
        # so that iresnet18 comes before iresnet100.
        names = sorted((n for n in get_model_list() if not n.startswith("lenet")),
                       key=lambda n: [int(t) if t.isdigit() else t
                                      for t in re.split(r"(\d+)", n)])
    rows = []
    for name in names:
        net = get_model(name, **kwargs)
        sym = _symbol(net)
        _, (out_shape, *_), _ = sym.infer_shape(data=tuple(input_shape))
        rows.append(ModelRow(name, int(out_shape[-1]),
                             count_params(net, input_shape) / 1e6,
                             count_flops(net, input_shape) / 1e9))
    return rows


def training_time(madds, num_images, peak_flops=T4_FP32_FLOPS,
                  utilization=0.3):
    """Seconds to train on ``num_images`` images, estimated from the counts.

    Book: introduced in ``chapter_loss/loss-comparison`` (比较：同一份数据上的所有损失).

    A training step costs about three forward passes (the backward pass
    computes gradients for both activations and weights), and one
    multiply-add is two FLOPs: ``2 * 3 * madds * num_images`` FLOPs, done
    at ``utilization`` of ``peak_flops``.

    Parameters
    ----------
    madds : int or float
        Multiply-adds of one forward pass per image (:func:`count_flops`),
        plus the head's (e.g. ``num_classes * embedding_size``).
    num_images : int or float
        Images seen in the whole run (epochs x data set size).
    peak_flops : float, default :data:`T4_FP32_FLOPS`
    utilization : float, default 0.3
        The fraction of the peak actually reached. An assumption, not a
        measurement: large convolutions on a GPU reach 30-60 %; networks as
        small as LeNet++ stay far below it (per-step overheads dominate), so
        for them the result is a lower bound.

    Returns
    -------
    float
    """
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {utilization}")
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be positive, got {peak_flops}")
    return 6.0 * float(madds) * float(num_images) / (peak_flops * utilization)
