"""Native operators never leave fr_lib: a traced graph written with
``HybridBlock.export`` is plain MXNet (``fr_prelu`` becomes
``LeakyReLU(act_type='prelu')``, :func:`plain_symbol`), and any other native
operator is refused (:class:`NativeExportError`).
"""
import json

import mxnet as mx

__all__ = ["NativeExportError", "plain_symbol"]


class NativeExportError(RuntimeError):
    """A graph to export contains native operators plain MXNet cannot load."""

def plain_symbol(sym):
    """``sym`` as plain MXNet: each ``fr_prelu`` node becomes MXNet's
    ``LeakyReLU(act_type='prelu')`` (the same function: ``x`` where
    ``x > 0``, else ``alpha * x``, slopes on axis 1), same inputs and names.

    Returns ``sym`` itself when it has no native node.

    Raises
    ------
    NativeExportError
        For any other native operator (``fr_fused_net``, the training
        operators, the losses'): these have no one-node MXNet equivalent.
    """
    graph = json.loads(sym.tojson())
    native = [n for n in graph["nodes"] if n["op"].startswith("fr_")]
    if not native:
        return sym
    others = sorted({n["op"] for n in native if n["op"] != "fr_prelu"})
    if others:
        raise NativeExportError(
            f"the graph contains fr_lib's native operators {', '.join(others)}, "
            "which plain MXNet (and ONNX) cannot load. Export the plain model "
            "instead: fr_lib.deploy.export_model(net, prefix), or trace it "
            "without them: `with fr_lib.native.mxnet_engine(net): "
            "net.hybridize(); net(x); net.export(prefix)` (a fused or native "
            "training view exports through the network it was made from)")
    names = {n["name"] for n in graph["nodes"]}
    for node in native:
        node["op"] = "LeakyReLU"
        node["attrs"] = {"act_type": "prelu"}
        name = node["name"].replace("fr_prelu", "leakyrelu")
        while name in names:
            name += "_"
        names.add(name)
        node["name"] = name
    return mx.sym.load_json(json.dumps(graph))


def _install_export_guard():
    """Make ``HybridBlock.export`` write plain MXNet (see :func:`plain_symbol`)
    once native operators can appear in traced graphs."""
    cls = mx.gluon.HybridBlock
    if getattr(cls.export, "_fr_lib_guard", False):
        return
    original = cls.export

    def export(self, path, epoch=0, remove_amp_cast=True):
        cached = getattr(self, "_cached_graph", None)
        if cached:
            inputs, sym = cached
            plain = plain_symbol(sym)
            if plain is not sym:
                self._cached_graph = (inputs, plain)
                try:
                    return original(self, path, epoch, remove_amp_cast)
                finally:
                    self._cached_graph = (inputs, sym)
        return original(self, path, epoch, remove_amp_cast)

    export.__doc__ = original.__doc__
    export.__wrapped__ = original
    export._fr_lib_guard = True
    cls.export = export
