"""The training graphs the objective layer builds: ``backbone -> head ->
loss`` with the contract's extra inputs (plus ``λ·regulariser`` on the
embeddings for a regularised objective), or ``backbone -> embeddings``
before a Partial FC head."""
from mxnet import gluon

__all__ = []


class _ObjectiveStep(gluon.HybridBlock):
    """backbone -> head -> per-sample loss, plus the extra inputs of the
    contract; returns ``loss`` or ``(loss, statistic)`` for stateful losses.

    With ``reg`` the per-sample ``weight·reg(z, y)`` on the embeddings z is
    added to the loss; ``paper``: the regulariser's parameters move outside
    the graph (CenterLoss's rule), so the graph reads them without updating
    them and also returns z and y (after the statistic, if any)."""

    def __init__(self, backbone, head, loss, kind, alpha=0.0, reg=None, weight=0.0,
                 paper=False, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.loss = backbone, loss
        if head is not None:
            self.head = head
        if reg is not None:
            self.reg = reg
        self._has_head, self._has_reg = head is not None, reg is not None
        self._kind, self._alpha = kind, float(alpha)
        self._weight, self._paper = float(weight), bool(paper)

    def hybrid_forward(self, F, x, y, *state):
        emb = self.backbone(x)
        if isinstance(emb, (list, tuple)):
            emb = emb[0]
        loss, stat = self._loss(F, emb, y, state)
        if not self._has_reg:
            return loss if stat is None else (loss, stat)
        if self._paper:  # the current parameters, no update inside the graph
            reg = gluon.HybridBlock.forward(self.reg, emb, y)
        else:
            reg = self.reg(emb, y)
        loss = loss + self._weight * reg
        out = (loss,) if stat is None else (loss, stat)
        if self._paper:
            out += (F.stop_gradient(emb), F.stop_gradient(y))
        return out if len(out) > 1 else loss

    def _loss(self, F, emb, y, state):
        """The per-sample loss and the statistic of a stateful loss (or None)."""
        if not self._has_head:
            loss = self.loss(emb, y)
            if self._kind != "batch":
                return loss, None
            if isinstance(loss, (list, tuple)):  # triplet's return_fraction
                loss = loss[0]
            # one loss per batch, spread over its samples (see the module doc)
            return F.broadcast_like(loss.reshape((1,)), y.reshape((-1,))), None
        out = self.head(emb)
        kind, a = self._kind, self._alpha
        if kind == "plain":
            return self.loss(out, y), None
        if kind == "lam":
            return self.loss(out, y, state[0]), None
        norm = F.sqrt(F.sum(F.square(emb), axis=1))
        if kind == "norm":
            return self.loss(out, y, norm), None
        if kind == "t":
            # CurricularFace: t advanced with this shard's mean true-class cosine
            cos_y = F.stop_gradient(F.clip(F.pick(out, y.reshape((-1,)), axis=1),
                                           -1.0, 1.0))
            t = F.broadcast_add(a * F.mean(cos_y).reshape((1,)), (1.0 - a) * state[0])
            return self.loss(out, y, t), cos_y
        # AdaFace: mean and (n-1) std of the clipped norms of this shard
        safe = F.stop_gradient(F.clip(norm, 1e-3, 100.0))
        n = F.sum(F.ones_like(safe)).reshape((1,))
        mu = F.mean(safe).reshape((1,))
        var = F.broadcast_div(F.sum(F.square(F.broadcast_sub(safe, mu))).reshape((1,)),
                              F.maximum(n - 1.0, 1.0))
        mean = a * mu + (1.0 - a) * state[0]
        std = F.where(n > 1.0, a * F.sqrt(var) + (1.0 - a) * state[1], state[1])
        return self.loss(out, y, norm, mean, std), safe


class _EmbeddingStep(gluon.HybridBlock):
    """backbone -> embeddings (the step graph before a Partial FC head)."""

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def hybrid_forward(self, F, x):
        emb = self.backbone(x)
        return emb[0] if isinstance(emb, (list, tuple)) else emb
