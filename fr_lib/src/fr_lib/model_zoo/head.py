"""The normalised-FC classification head that feeds the margin losses.

It is kept apart from the backbones: training uses ``backbone -> NormDense ->
margin loss``, while inference and export carry only the backbone.
"""
from mxnet import gluon

from .layers import l2_normalize_rows

__all__ = ["NormDense"]


class NormDense(gluon.HybridBlock):
    r"""Cosine classifier: ``cos θ_ij = <x_i/||x_i||, w_j/||w_j||>``.

    Book: introduced in ``chapter_loss/normalization`` (归一化与尺度：L2-Softmax 与 NormFace).

    The output is the ``(batch, num_classes)`` cosine matrix that every loss
    in :mod:`fr_lib.loss.margin` takes as input. Both the embeddings and the
    class weights are L2-normalised and there is no bias (NormFace,
    arXiv 1704.06369; ArcFace, arXiv 1801.07698).

    Parameters
    ----------
    num_classes : int
        Number of identities.
    in_units : int, default 0
        Embedding size; 0 infers it at the first forward call.
    eps : float, default 1e-12
        Added under the square root so a zero vector stays finite.
    weight_initializer : Initializer or str, default 'xavier'
    dtype : str, default 'float32'
    """

    def __init__(self, num_classes, in_units=0, eps=1e-12,
                 weight_initializer="xavier", dtype="float32", **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
        self.num_classes = int(num_classes)
        self._eps = float(eps)
        with self.name_scope():
            self.weight = self.params.get(
                "weight", shape=(self.num_classes, in_units),
                init=weight_initializer, dtype=dtype, allow_deferred_init=True)

    def infer_shape(self, x, *args):
        self.weight.shape = (self.num_classes, x.shape[1])

    def hybrid_forward(self, F, x, weight):
        x = l2_normalize_rows(F, x, self._eps)
        weight = l2_normalize_rows(F, weight, self._eps)
        return F.FullyConnected(x, weight, no_bias=True, num_hidden=self.num_classes,
                                flatten=True)

    def __repr__(self):
        return f"{self.__class__.__name__}({self.weight.shape[1] or None} -> {self.num_classes})"
