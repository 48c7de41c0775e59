"""The native forms of fr_lib's blocks (used only through :func:`to_native`).

Each class here subclasses the block it speeds up and overrides only
``hybrid_forward``: same parameters, same constructor arguments, same
results up to float32 rounding (``tests/test_native_backend.py``). The
readable formulas stay in ``fr_lib/loss`` and ``fr_lib/model_zoo``, where they
always run as written; :func:`fr_lib.native.to_native` swaps a block's class
for the one below and :func:`fr_lib.native.to_mxnet` swaps it back.

- ``model_zoo.PReLU`` -> ``fr_prelu``: one pass forward, one backward;
- the margin softmax losses (NormFace, CosFace, ArcFace, SphereFace, the
  combined margin, MagFace, AdaFace) -> ``fr_margin_ce``: one read of the
  cosine matrix forward, one write of its gradient backward;
- ``SubCenterArcFaceLoss``: the max over sub-centres inside that kernel;
- ``CurricularFaceLoss``: the hard-negative reweighting inside it;
- ``CircleLoss``: both branches inside it.
"""
import mxnet as mx

from ..loss.advanced import (CircleLoss, CurricularFaceLoss, SubCenterArcFaceLoss,
                             _arc_fallback)
from ..loss.margin import _MarginSoftmaxLoss, _check_inputs, _check_labels
from ..model_zoo.layers import PReLU

__all__ = ["NATIVE_FORMS"]


class NativePReLU(PReLU):
    """:class:`~fr_lib.model_zoo.PReLU` through ``fr_prelu``."""

    def hybrid_forward(self, F, x, alpha):
        return F.fr_prelu(x, alpha)


class NativeMarginSoftmax(_MarginSoftmaxLoss):
    """A margin softmax loss through ``fr_margin_ce`` (the operator checks
    the labels itself, so no graph-side label check is traced)."""

    def hybrid_forward(self, F, cos, label, *args):
        if F is mx.nd:
            _check_inputs(cos, label)
        label = label.reshape((-1,))
        target = self._target(F, F.pick(cos, label, axis=1), *args)
        replace = target is not None
        if not replace:
            target = F.zeros_like(label)
        return F.fr_margin_ce(cos, label, target, scale=self._s,
                              replace=int(replace))[0]


class NativeSubCenterArcFaceLoss(SubCenterArcFaceLoss):
    """Sub-centre ArcFace with the max over sub-centres inside the kernel."""

    def hybrid_forward(self, F, cos, label):
        if F is mx.nd:
            self._check_columns(cos)
            _check_labels(label, cos.shape[0], cos.shape[1] // self._k)
        label = label.reshape((-1,))
        grouped = cos.reshape((0, -4, -1, self._k))
        per_centre = F.broadcast_axis(label.reshape((-1, 1)), axis=1, size=self._k)
        # The target's own gradient is applied by the kernel (its slope), so
        # no dense (batch, C*k) gradient of this pick is ever formed.
        cos_y = F.stop_gradient(F.max(F.pick(grouped, per_centre, axis=1), axis=1))
        return F.fr_margin_ce(cos, label, self._target(F, cos_y),
                              self._target_slope(F, cos_y), scale=self._s,
                              replace=1, subcenters=self._k, target_slope=1)[0]


class NativeCurricularFaceLoss(CurricularFaceLoss):
    """CurricularFace with the hard-negative reweighting inside the kernel."""

    def hybrid_forward(self, F, cos, label, t):
        if F is mx.nd:
            _check_inputs(cos, label)
        label = label.reshape((-1,))
        cos_y = F.pick(cos, label, axis=1)
        cos_ym = F.cos(self._theta(F, cos_y) + self._m)
        target = _arc_fallback(F, cos_y, cos_ym, self._m)
        return F.fr_margin_ce(cos, label, target, F.stop_gradient(cos_ym),
                              F.stop_gradient(t).reshape((1,)), scale=self._s,
                              replace=1, negatives=1)[0]


class NativeCircleLoss(CircleLoss):
    """Circle loss with both branches inside the kernel."""

    def hybrid_forward(self, F, cos, label):
        if F is mx.nd:
            _check_inputs(cos, label)
        label = label.reshape((-1,))
        cos_y = F.pick(cos, label, axis=1)
        alpha_p = F.stop_gradient(F.relu(1.0 + self._m - cos_y))
        positive = alpha_p * (cos_y - (1.0 - self._m))
        return F.fr_margin_ce(cos, label, positive, scale=self._s, replace=1,
                              negatives=2, margin=self._m)[0]


# the MXNet class each native form replaces; the most specific one that a
# block's class derives from is used (see fr_lib.native.backend)
NATIVE_FORMS = {PReLU: NativePReLU,
                _MarginSoftmaxLoss: NativeMarginSoftmax,
                SubCenterArcFaceLoss: NativeSubCenterArcFaceLoss,
                CurricularFaceLoss: NativeCurricularFaceLoss,
                CircleLoss: NativeCircleLoss}
