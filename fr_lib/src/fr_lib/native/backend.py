"""The one switch between fr_lib's MXNet formulas and its native operators.

fr_lib's losses and layers are written as the mathematics, with MXNet
operators, and that is what runs — on every device, in the book's "from
scratch vs fr_lib" checks, in exported files. On CPU, fr_lib has faster
native forms of some of them (:mod:`fr_lib.native.blocks`); they are used
only where a network or loss is converted explicitly:

>>> net = fr_lib.native.to_native(net)          # engine='auto' (CPU: native)
>>> loss = fr_lib.native.to_native(ArcFaceLoss())

The trainer (``TrainConfig.engine``), :class:`~fr_lib.metrics.VerificationEvaluator`
(``engine=``) and :func:`~fr_lib.model_zoo.prepare_for_inference`
(``engine=``) call it with the same vocabulary:

``'auto'``
    native where it can run (CPU contexts, the operators built or buildable),
    the MXNet formulas elsewhere (why is in :func:`resolve_engine`'s reason);
``'native'``
    native, or a ``ValueError`` that says why not;
``'mxnet'``
    MXNet's operators only.

Converting swaps the class of each block that has a native form for that
form (a subclass of it: ``isinstance`` still holds, parameters and arguments
are untouched) and drops cached graphs; :func:`to_mxnet` swaps back.
``FR_LIB_NATIVE=0`` keeps the library from loading at all (then ``'auto'``
means ``'mxnet'``).
"""
import contextlib
import warnings

import mxnet as mx

from .. import ops

__all__ = ["ENGINES", "check_engine", "resolve_engine", "to_native", "to_mxnet",
           "mxnet_engine", "native_blocks"]

ENGINES = ("auto", "native", "mxnet")


def check_engine(engine, owner="engine"):
    """``engine`` lower-cased if it is one of :data:`ENGINES`.

    ``'fused'`` (the old name of ``'native'`` in ``prepare_for_inference``)
    is accepted with a DeprecationWarning.
    """
    name = str(engine).lower()
    if name == "fused":
        warnings.warn(f"{owner}='fused' is deprecated: use {owner}='native'",
                      DeprecationWarning, stacklevel=3)
        return "native"
    if name not in ENGINES:
        raise ValueError(f"{owner} must be 'auto', 'native' or 'mxnet', got {engine!r}")
    return name


def _contexts(block):
    found = set()
    for param in block.collect_params().values():
        try:
            found.update(param.list_ctx())
        except RuntimeError:  # deferred initialisation: no context yet
            pass
    return found


def _renamed_ctx(ctx, contexts, where):
    """``ctx``, or the deprecated ``contexts=`` keyword with a warning."""
    if contexts is None:
        return ctx
    warnings.warn(f"{where}(contexts=...) is now ctx=...", DeprecationWarning,
                  stacklevel=3)
    if ctx is not None:
        raise TypeError(f"{where}: give ctx or contexts (deprecated), not both")
    return contexts


def resolve_engine(engine="auto", ctx=None, *, contexts=None):
    """Which engine ``engine`` means here: ``('native' | 'mxnet', reason)``.

    Parameters
    ----------
    engine : {'auto', 'native', 'mxnet'}
    ctx : iterable of Context, optional
        Where the converted blocks will run; a non-CPU context rules the
        native operators out (they are CPU-only). ``contexts=`` is the
        deprecated name.

    Returns
    -------
    (str, str)
        The engine and, when it is ``'mxnet'``, why not ``'native'``
        (empty otherwise).

    Raises
    ------
    ValueError
        For an unknown name, or ``'native'`` where the operators cannot run.
    """
    ctx = _renamed_ctx(ctx, contexts, "resolve_engine")
    engine = check_engine(engine)
    if engine == "mxnet":
        return "mxnet", "engine='mxnet'"
    devices = sorted({c.device_type for c in (ctx or ())} - {"cpu"})
    if devices:
        why = f"the native operators run on CPU only, not on {', '.join(devices)}"
    elif not ops.available():
        why = f"fr_lib's native operators are unavailable: {ops.load_error()}"
    else:
        return "native", ""
    if engine == "native":
        raise ValueError(f"engine='native' cannot be used: {why}")
    return "mxnet", why


_CLASSES = {}


def _native_class(cls):
    """The native form of blocks of class ``cls``, or None."""
    if cls in _CLASSES:
        return _CLASSES[cls]
    from .blocks import NATIVE_FORMS
    native = None
    for base in cls.__mro__:
        if base in NATIVE_FORMS:
            form = NATIVE_FORMS[base]
            # a subclass of the form's base keeps its own overrides, which
            # reach the native hybrid_forward through super()
            native = form if cls is base else type(
                f"Native{cls.__name__}", (cls, form),
                {"__module__": form.__module__, "__doc__": cls.__doc__})
            native._fr_mxnet_class = cls
            break
    _CLASSES[cls] = native
    return native


def native_blocks(block):
    """The blocks inside ``block`` (itself included) in their native form."""
    found = []
    block.apply(lambda b: found.append(b)
                if getattr(type(b), "_fr_mxnet_class", None) else None)
    return found


def _swap(block, to_native):
    swapped = []

    def visit(b):
        cls = type(b)
        if to_native and not getattr(cls, "_fr_mxnet_class", None):
            native = _native_class(cls)
            if native is not None:
                b.__class__ = native
                swapped.append(b)
        elif not to_native and getattr(cls, "_fr_mxnet_class", None):
            b.__class__ = cls._fr_mxnet_class
            swapped.append(b)

    block.apply(visit)
    if swapped:  # graphs traced with the other forms must be traced again
        block.apply(lambda b: b._clear_cached_op()
                    if isinstance(b, mx.gluon.HybridBlock) else None)
    return swapped


def to_native(block, engine="auto", ctx=None, *, contexts=None):
    """Convert ``block`` and every block inside it to its native form, in place.

    Parameters
    ----------
    block : Block
        A network, a loss, or a training step holding both.
    engine : {'auto', 'native', 'mxnet'}, default 'auto'
        See :func:`resolve_engine`; ``'mxnet'`` (or ``'auto'`` where the
        operators cannot run) leaves ``block`` as it is.
    ctx : iterable of Context, optional
        Where it will run; by default its parameters' contexts
        (``contexts=`` is the deprecated name).

    Returns
    -------
    Block
        ``block`` itself (:func:`native_blocks` lists what was converted).
    """
    ctx = _renamed_ctx(ctx, contexts, "to_native")
    if ctx is None:
        ctx = _contexts(block)
    engine, _ = resolve_engine(engine, ctx)
    if engine == "native":
        _swap(block, True)
    return block


def to_mxnet(block):
    """Undo :func:`to_native`: every block back to its MXNet formula."""
    _swap(block, False)
    return block


@contextlib.contextmanager
def mxnet_engine(block):
    """Run ``block`` with its MXNet formulas inside a ``with`` block (to
    trace a graph for export or for counting FLOPs), converting back after."""
    swapped = _swap(block, False)
    try:
        yield block
    finally:
        if swapped:
            for b in swapped:
                b.__class__ = _native_class(type(b))
            block.apply(lambda b: b._clear_cached_op()
                        if isinstance(b, mx.gluon.HybridBlock) else None)
