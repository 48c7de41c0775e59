"""One training step of :class:`~fr_lib.train.trainer.FaceTrainer`.

:meth:`StepMixin.train_step` splits the batch over the contexts, runs the
objective forward and backward under ``autograd.record`` (with AMP's loss
scaling when ``amp`` is set), sums the gradients over contexts and workers
(kvstore or Horovod), clips them (element-wise in the optimizer, or to a
global norm here) and updates; the trainer's
:class:`~fr_lib.train.trainer.guard.StepGuard` measures the loss, the
gradient and the updated state in one transfer and undoes the step when one
of them is not finite.
"""
import logging
import math

import numpy as np
import mxnet as mx
from mxnet import autograd, gluon

from ..checkpoint import step_seed
from .guard import REASONS, NonFiniteError, check_batch_labels, fetch, why_bad

__all__ = ["StepMixin"]

logger = logging.getLogger("fr_lib")


class StepMixin:
    """The step and its randomness (a part of
    :class:`~fr_lib.train.trainer.FaceTrainer`)."""

    def rng(self, stream):
        """The trainer's NumPy generator for stream ``stream`` (an int) at
        the current iteration: ``default_rng(SeedSequence(seed,
        spawn_key=(iteration, stream)))``. A function of the run's seed and
        position only (nothing to save, the same after a resume); stream 1 is
        Partial FC's class sampling. NumPy's global generator is not used."""
        return np.random.default_rng(np.random.SeedSequence(
            int(self.config.seed), spawn_key=(int(self.iteration), int(stream))))

    @staticmethod
    def _seed_mxnet(seed):
        """Seed MXNet's global generators of every context: the one global
        state the trainer sets (MXNet has no private generators and no API
        to read theirs); see "Randomness" in :mod:`fr_lib.train.trainer`."""
        mx.random.seed(int(seed), ctx="all")

    def current_lr(self):
        """The learning rate of the next step."""
        return self.schedule(self.iteration)

    def train_step(self, X, y):
        """One iteration on the batch ``(X, y)``.

        Parameters
        ----------
        X, y : NDArray
            The batch of this worker; split over its contexts.

        Returns
        -------
        float or None
            The mean loss, or None when the step was skipped as non-finite
            (the parameters, the optimizer state and the BatchNorm running
            statistics are then as they were before the step).

        Raises
        ------
        ValueError
            When a label is not a class id in ``[0, num_classes)``.
        NonFiniteError
            After ``max_bad_steps`` consecutive skipped steps.

        Notes
        -----
        The guard costs no extra wait for the device: the loss, the squared
        norm of the gradients and that of the updated weights and running
        statistics come back to the host in one transfer after the update
        (two with AMP or ``clip_global_norm``, which need the gradient norm
        before the update). Restoring needs a copy of the weights, optimizer
        state and running statistics taken before each step (on the device,
        asynchronous). A squared norm that overflows float32 (values beyond
        about 1e19) counts as non-finite.
        """
        cfg = self.config
        self.prepare(X)
        check_batch_labels(y, self.num_classes, self.iteration, self.data)
        lr = self.schedule(self.iteration)
        self.trainer.set_learning_rate(lr)
        if cfg.reseed_every_step:
            self._seed_mxnet(step_seed(cfg.seed, self.iteration))
        warm = self._warm_net is not None and self.iteration < cfg.loss_warmup_iters
        step_net = self._warm_net if warm else self._step_net
        objective = self.warmup_objective if warm else self.objective
        n = X.shape[0]
        if n < len(self.ctx):
            raise ValueError(f"a batch of {n} cannot be split over "
                             f"{len(self.ctx)} contexts")
        xs = gluon.utils.split_and_load(X, self.ctx, even_split=False)
        ys = gluon.utils.split_and_load(y, self.ctx, even_split=False)
        # the kvstore's first broadcast of the weights comes before the copy
        self._init_kvstore()
        # before the forward pass: BatchNorm writes its running statistics
        # during the step (MXNet's in the backward pass, the native engine's
        # in the forward pass)
        self.guard.snapshot(full=cfg.check_update)
        # Partial FC samples its classes from the trainer's generator
        rng = self.rng(1) if objective.partial_fc_head else None
        with autograd.record():
            # the contract's extra inputs (λ, running t / μ, σ) per context
            losses, stats = objective.forward(step_net, xs, ys, self.ctx,
                                              self.iteration, rng)
            if cfg.amp is not None:  # the scaling must be recorded too
                with self._amp.scale_loss(losses, self.trainer) as scaled:
                    autograd.backward(scaled)
        if cfg.amp is None:
            autograd.backward(losses)
        if self._need_broadcast:  # Horovod: after the deferred init
            self._hvd.broadcast_parameters(self.params, root_rank=0)
            self._need_broadcast = False
            self.guard.keep_weights()  # an undo must restore rank 0's weights
        c0 = self.ctx[0]
        objective.advance(stats, c0)  # undone below if the step is skipped
        loss_sums = [l.sum().astype("float32").reshape((1,)).as_in_context(c0)
                     for l in losses]
        self.trainer.allreduce_grads()
        # the gradient the optimizer applies is the sum over all samples of
        # all workers divided by their number; Horovod's trainer already
        # divides by the number of workers itself
        total = n * self.num_workers
        update_n = n if self._hvd is not None else total
        self.iteration += 1
        nl = len(loss_sums)
        if cfg.amp is None and not cfg.clip_global_norm and cfg.check_update:
            # update first, then one transfer: loss, gradient and new weights
            grad_sq = self.guard.grad_sq()  # (before a Partial FC head's update)
            self.trainer.update(update_n)
            objective.step_head(lr, n)
            values = fetch(loss_sums + [grad_sq, self.guard.state_sq()])
            loss_sum = float(values[:nl].sum())
            why = why_bad(loss_sum, values[nl], values[nl + 1])
        else:
            check_grads = cfg.amp is None or bool(cfg.clip_global_norm)
            # (check_update=False: the old order, no copy of the weights)
            if check_grads and cfg.amp is not None:
                self._amp.unscale(self.trainer)
            values = fetch(loss_sums + ([self.guard.grad_sq()] if check_grads else []))
            loss_sum = float(values[:nl].sum())
            sq = values[nl] if check_grads else 0.0
            why = why_bad(loss_sum, sq, 0.0)
            if why == "gradient" and cfg.amp is not None:
                # float16 overflow: AMP's loss scaler skips the update and
                # lowers the scale (dynamic loss scaling), not a bad step
                self.trainer.update(update_n)
                self.overflow_steps += 1
                return loss_sum / n
            if why is None:
                if cfg.clip_global_norm:
                    self._clip(sq, total)
                self.trainer.update(update_n)
                objective.step_head(lr, n)
                if cfg.check_update:
                    why = why_bad(0.0, 0.0, float(self.guard.state_sq().asscalar()))
        if why is not None:
            self.guard.restore()
            objective.undo()
            self.bad_steps += 1
            self._consecutive_bad += 1
            self.log({"event": "bad_step", "iteration": self.iteration,
                      "loss": loss_sum / n if math.isfinite(loss_sum) else None,
                      "reason": why, "bad_steps": self.bad_steps})
            logger.warning("fr_lib: iteration %d: non-finite %s, step skipped and "
                           "undone (%d so far)", self.iteration, REASONS[why],
                           self.bad_steps)
            if self._consecutive_bad >= cfg.max_bad_steps:
                latest = self.checkpoints.latest() if self.is_writer else None
                raise NonFiniteError(
                    f"{self._consecutive_bad} consecutive steps (up to iteration "
                    f"{self.iteration}) had a non-finite loss, gradient or update "
                    f"(the last: {REASONS[why]}); training stopped. The last good "
                    f"checkpoint is kept: {latest or 'none was written'}. Lower the "
                    "learning rate, add warm-up or gradient clipping, or check the "
                    "data.")
            return None
        self._consecutive_bad = 0
        return loss_sum / n


    def _init_kvstore(self):
        """Create the kvstore and broadcast the weights before the first allreduce.

        Gluon does both lazily inside ``allreduce_grads``; with a distributed
        kvstore the weight pull of that broadcast and the first gradient
        push-pull use the same keys on the server and are independent engine
        operations, so a worker could pull a gradient sum as its weights.
        Waiting for the broadcast removes that race.
        """
        trainer = self.trainer
        if getattr(trainer, "_kv_initialized", True) and \
                not getattr(trainer, "_params_to_init", None):
            return
        trainer._init_kvstore()
        if trainer._params_to_init:
            trainer._init_params()
        mx.nd.waitall()

    def prepare(self, X):
        """Finish the deferred initialisation of the network and head.

        Called by the first :meth:`train_step`; call it yourself to read the
        parameters before training. Runs the backbone and the head on one
        sample of ``X`` outside autograd (BatchNorm statistics are not
        touched), after reseeding MXNet with the run's seed.

        Parameters
        ----------
        X : NDArray
            A batch (only its first sample is used).

        Notes
        -----
        :class:`~fr_lib.model_zoo.NormDense` normalises its weight before
        ``FullyConnected``, so a parent graph cannot infer the weight's shape.
        """
        if self._shapes_known:
            return
        # reseeded so that the deferred initial values depend on the seed
        # only, not on what else used MXNet's generator since __init__
        self._seed_mxnet(self.config.seed)
        x = X[:1].as_in_context(self.ctx[0])
        emb = self.net(x)
        self.objective.init_shapes(emb[0] if isinstance(emb, (list, tuple)) else emb)
        self._shapes_known = True


    def _clip(self, sq, total):
        """Rescale the gradients to the global norm ``clip_global_norm``."""
        max_norm = self.config.clip_global_norm
        # the optimizer sees grad / total: clip that norm, in raw units
        norm = math.sqrt(sq) / total
        if norm > max_norm:
            factor = max_norm / norm
            for i in range(len(self.ctx)):
                for g in self.guard.grads(i):
                    g *= factor
            for _, g in self.guard.head_grads():
                g *= factor

