"""The trainer: :class:`~fr_lib.train.trainer.FaceTrainer` builds its pieces
from a :class:`~fr_lib.train.trainer.TrainConfig` and runs the one training
loop of fr_lib (:meth:`~fr_lib.train.trainer.FaceTrainer.fit`); its parts
are the other modules of :mod:`fr_lib.train.trainer`."""
import logging
import time

from mxnet import gluon

from ...model_zoo import get_model
from ..callbacks import ProgressBar, Verification
from ...utils.deprecation import renamed_attribute
from .build import (build_objectives, check_config, choose_engine, make_config_schedule,
                    exclude_from_weight_decay, init_amp, initialize,
                    make_gluon_trainer, make_step_nets, setup_devices)
from .config import TrainConfig, TrainResult
from .guard import StepGuard
from .resume import CheckpointMixin
from .run_dir import RunDirectory
from .step import StepMixin

__all__ = ["FaceTrainer"]

logger = logging.getLogger("fr_lib")


class FaceTrainer(StepMixin, CheckpointMixin):
    """Train a face recognition backbone with a margin loss (see the module docstring).

    Book: introduced in ``chapter_training/reliable-training`` (可靠的训练：调度、验证与断点续训).

    Parameters
    ----------
    config : TrainConfig or dict
    data : data source or callable
        An object with ``next_batch() -> (X, y)``, ``state_dict()`` and
        ``load_state_dict(state)`` (:class:`ArrayBatches`,
        :class:`RecordBatches`), or a callable ``data(num_parts, part_index)``
        returning one, so that each distributed worker gets its own shard.
    backbone : HybridBlock, optional
        Default ``get_model(config.backbone, **config.backbone_kwargs)``;
        a block whose parameters are already initialised (e.g. pretrained)
        keeps them.
    head : HybridBlock, optional
        Default: the head of the loss's contract (``NormDense(num_classes)``,
        ``Dense`` for ``'softmax'``; see :mod:`fr_lib.train.objective`), or
        :class:`~fr_lib.train.PartialFC` with ``config.head='partial_fc'``
        (then no head block may be given).
    val_sets : dict, optional
        ``name -> (images, issame)`` or :class:`~fr_lib.data.VerificationSet`;
        default: the ``.bin`` files of ``config.val_sets``. Either adds a
        :class:`~fr_lib.train.callbacks.Verification` callback (every
        ``config.verify_every`` iterations and at the end); or pass one in
        ``callbacks`` instead (not both).
    callbacks : list of callable or Callback
        Called as ``callback(trainer, record)`` after every iteration with
        the record ``{'iteration', 'loss', 'lr', 'skipped', ...}``; a
        :class:`~fr_lib.train.callbacks.Callback` also gets its other hooks
        (``on_begin``, ``on_train_end``, ``on_end``) around each :meth:`fit`.
    objective : fr_lib.train.objective.Objective, optional
        A prebuilt objective (head, loss, extra inputs; the interface of
        :class:`fr_lib.train.objective.Objective`) instead of the one of
        ``config.loss``, e.g. a loss plus a regulariser
        (:func:`fr_lib.train.features.build_objective`).

    Attributes
    ----------
    net : HybridBlock
        The backbone.
    head : HybridBlock or None
        None with ``config.head='partial_fc'`` (see ``partial_fc``).
    ctx : list of Context
        The contexts of this worker (``contexts`` is a deprecated alias).
    trainer : gluon.Trainer
    iteration : int
        Completed iterations.
    bad_steps : int
        Steps skipped because the loss or the gradient was not finite.
    overflow_steps : int
        AMP steps skipped by the dynamic loss scaler (float16 overflow; not
        counted as bad steps, they are routine while the scale settles).
    guard : StepGuard
        Snapshots and undoes non-finite steps (:mod:`fr_lib.train.trainer.guard`).
    run_dir : RunDirectory or None
        The run's directory, lock and log (None with ``out_dir=None``).
    checkpoints : CheckpointManager
    log_path : str
    best_metric, best_iteration, results
        What verification found (see
        :class:`~fr_lib.train.callbacks.Verification`); saved in checkpoints.

    Notes
    -----
    The gradient of a step is the sum of the per-sample losses over the
    whole batch (all contexts, all workers) divided by the number of
    samples, so one context and two contexts with the same total batch give
    the same update (up to float rounding; BatchNorm statistics are computed
    per context, as in every data-parallel MXNet program). Only rank 0 of a
    distributed run writes checkpoints and logs (the logged loss is rank
    0's share of the batch); to resume, every worker must see the same
    ``out_dir``.

    The class is assembled from :class:`~fr_lib.train.trainer.step.StepMixin`
    (:meth:`train_step`) and
    :class:`~fr_lib.train.trainer.resume.CheckpointMixin`
    (:meth:`save_checkpoint`, :meth:`load_checkpoint`); it owns a
    :class:`~fr_lib.train.trainer.guard.StepGuard` and a
    :class:`~fr_lib.train.trainer.run_dir.RunDirectory`.
    """

    def __init__(self, config, data, backbone=None, head=None, val_sets=None,
                 callbacks=(), objective=None):
        if isinstance(config, dict):
            config = TrainConfig.from_dict(config)
        self.config = cfg = config
        # refused before anything process-wide (AMP) is set up
        check_config(cfg, prebuilt_objective=objective is not None)
        self.callbacks = list(callbacks)
        devices = setup_devices(cfg)
        self.ctx, self.kvstore, self._hvd = devices.ctx, devices.kvstore, devices.hvd
        self.num_workers, self.rank = devices.num_workers, devices.rank
        self._amp = init_amp(cfg.amp, self.ctx) if cfg.amp is not None else None
        # initialisers of parameters whose shapes are known now draw here
        self._seed_mxnet(cfg.seed)
        self.data = data(self.num_workers, self.rank) if callable(data) and \
            not hasattr(data, "next_batch") else data
        for attr in ("next_batch", "state_dict", "load_state_dict"):
            if not hasattr(self.data, attr):
                raise TypeError(f"data needs a {attr}() method (see ArrayBatches)")
        num_classes = cfg.num_classes or getattr(self.data, "num_classes", 0)
        if not num_classes and head is None:
            raise ValueError("num_classes is unknown: set config.num_classes")
        self.num_classes = int(num_classes)
        self.net = backbone if backbone is not None else \
            get_model(cfg.backbone, **cfg.backbone_kwargs)
        from ...data.sampler import PKSampler
        pk = isinstance(getattr(self.data, "batch_sampler", None), PKSampler)
        pfc_args = None if str(cfg.head).lower() != "partial_fc" else dict(
            sample_rate=float(cfg.sample_rate), ctx=self.ctx,
            softmax=str(cfg.partial_fc_softmax).lower(), momentum=cfg.momentum,
            wd=cfg.wd, clip_gradient=cfg.clip_gradient, rng=self.rng)
        self.objective, self.warmup_objective = build_objectives(
            cfg, self.num_classes, head, pk, objective, pfc_args, self.num_workers)
        self.head, self.loss = self.objective.head, self.objective.loss
        self.warmup_loss = None if self.warmup_objective is None \
            else self.warmup_objective.loss
        for block in (self.net, self.head):
            if block is not None:
                initialize(block, self.ctx)
        self.engine, self.engine_reason = choose_engine(cfg, self.ctx, self.net)
        self._step_net, self._warm_net = make_step_nets(
            cfg, self.engine, self.net, (self.objective, self.warmup_objective),
            self.ctx)
        self.params = gluon.ParameterDict()
        self.params.update(self.net.collect_params())
        if self.head is not None:
            self.params.update(self.head.collect_params())
        self.no_wd_params = exclude_from_weight_decay(self.params) if cfg.no_wd else []
        self.schedule = make_config_schedule(cfg)
        self.trainer, self._need_broadcast = make_gluon_trainer(
            self.params, cfg, self.schedule(0), devices, self._amp)
        self.guard = StepGuard(self.params, self.ctx, self.trainer, self.objective)
        self.iteration, self.bad_steps, self._consecutive_bad = 0, 0, 0
        self.overflow_steps = 0
        self._shapes_known = False
        self.best_metric, self.best_iteration = None, None
        self.results = {}
        if cfg.out_dir is None:  # nothing on disk: no log, no checkpoints
            if cfg.resume:
                raise ValueError(f"resume={cfg.resume!r} needs an out_dir (out_dir=None "
                                 "keeps no checkpoints)")
            self.run_dir = None
            self.out_dir = self.checkpoints = self.best_checkpoints = None
            self.log_path, self.is_writer = None, False
        else:
            run = RunDirectory(cfg.out_dir, self.rank == 0, cfg.keep_last)
            self.run_dir, self.out_dir, self.log_path = run, run.out_dir, run.log_path
            self.is_writer, self.checkpoints = run.is_writer, run.checkpoints
            self.best_checkpoints = run.best_checkpoints
        self._add_verification(val_sets)
        self.last_checkpoint = None
        self._claimed = False  # the first fit() has checked and taken out_dir

    def _add_verification(self, val_sets):
        """A :class:`Verification` callback for ``val_sets`` or ``config.val_sets``."""
        cfg = self.config
        sets = val_sets if val_sets is not None else cfg.val_sets
        if not sets:
            return
        if self.verification is not None:
            raise ValueError("verification sets were given twice: as a Verification "
                             "callback and as val_sets (or config.val_sets); give "
                             "one of them")
        self.callbacks.append(Verification(
            sets, every=cfg.verify_every, batch_size=cfg.val_batch_size,
            best_metric=cfg.best_metric, data_dir=cfg.data, ctx=self.ctx[0]))

    @property
    def partial_fc(self):
        """The :class:`~fr_lib.train.PartialFC` head, or None."""
        return getattr(self.objective, "partial_fc", None)

    contexts = renamed_attribute("FaceTrainer", "contexts", "ctx")

    # -- verification (a callback) ---------------------------------------------
    @property
    def verification(self):
        """The :class:`~fr_lib.train.callbacks.Verification` callback, or None."""
        return next((c for c in self.callbacks if isinstance(c, Verification)), None)

    @property
    def evaluator(self):
        """The verification's :class:`~fr_lib.metrics.VerificationEvaluator`."""
        v = self.verification
        return None if v is None else v.get_evaluator(self)

    def verify(self):
        """Verify on the pair sets now; save the best model (rank 0).

        Returns
        -------
        dict
            ``name -> VerificationReport`` (empty without sets).
        """
        v = self.verification
        return {} if v is None else v.verify(self)

    @property
    def best_path(self):
        """Parameters file of the best backbone so far, or None."""
        return None if self.run_dir is None else self.run_dir.best_path

    def saveable(self):
        """Whether the current weights may be kept (a checkpoint, the best
        model): no streak of skipped steps is under way and, on rank 0,
        every weight, statistic and optimizer state is finite."""
        return not self._consecutive_bad and \
            not (self.is_writer and self.guard.nonfinite_tensors())

    def log(self, record):
        """Append ``record`` (a dict with ``'event'`` and ``'iteration'``) to
        the run's ``log.jsonl`` (rank 0; nothing with ``out_dir=None``)."""
        if self.run_dir is not None:
            self.run_dir.log(record)


    # -- the loop --------------------------------------------------------------
    def fit(self, max_iters=None):
        """Train until ``max_iters`` iterations are done (default ``config.max_iters``).

        Parameters
        ----------
        max_iters : int, optional

        Returns
        -------
        TrainResult

        Raises
        ------
        NonFiniteError
            After ``max_bad_steps`` consecutive non-finite steps.
        CheckpointError
            When resuming from a corrupt checkpoint, or when a save fails.
        RunDirectoryError
            (a CheckpointError) When ``out_dir`` holds another run and neither
            ``resume`` nor ``fresh`` is set, when another process trains
            into it (it is locked for the life of each call), or when the
            log cannot be written (a full disk).

        Notes
        -----
        The first call claims ``out_dir`` for this run (see
        ``TrainConfig.resume`` and ``TrainConfig.fresh``); later calls on the
        same trainer continue from where the previous one stopped.

        On its way out ``fit`` calls the data source's ``close()``, whoever
        made the source: its background threads stop (the prefetch thread of
        :class:`~fr_lib.data.recordio.RecordBatches`, DALI's pipeline) and it
        stays usable at its position (what ``close()`` promises,
        :mod:`fr_lib.data.source`): the next ``fit`` continues from there.
        """
        cfg = self.config
        max_iters = cfg.max_iters if max_iters is None else int(max_iters)
        first = not self._claimed
        if self.run_dir is not None:
            self.run_dir.lock()
        try:
            if not self._claimed:
                self._claim()
                self._claimed = True
            return self._fit(max_iters, first)
        finally:
            try:
                close = getattr(self.data, "close", None)
                if callable(close):
                    close()
            finally:
                if self.run_dir is not None:
                    self.run_dir.unlock()

    def _fit(self, max_iters, first):
        cfg = self.config
        if self.iteration == 0 and first:
            self.log({"event": "start", "iteration": 0, "config": cfg.to_dict(),
                      "contexts": [str(c) for c in self.ctx],
                      "engine": self.engine, "engine_reason": self.engine_reason})
            logger.info("fr_lib: training engine %s%s", self.engine,
                        f" ({self.engine_reason})" if self.engine_reason else "")
        start_time = time.perf_counter()
        step_time, step_images = 0.0, 0
        window_loss, window_n, window_images, window_time = 0.0, 0, 0, 0.0
        last_loss = None
        # the bar is a callback too (fr_lib.train.callbacks), first in line
        hooks = [ProgressBar(every=cfg.log_every, total=max_iters)] \
            if cfg.progress else []
        hooks += self.callbacks
        self._call(hooks, "on_begin")
        try:
            while self.iteration < max_iters:
                t0 = time.perf_counter()
                X, y = self.data.next_batch()
                lr = self.schedule(self.iteration)
                loss = self.train_step(X, y)
                dt = time.perf_counter() - t0
                step_time += dt
                step_images += X.shape[0]
                window_time += dt
                window_images += X.shape[0]
                if loss is not None:
                    window_loss += loss
                    window_n += 1
                it = self.iteration
                if it % cfg.log_every == 0 or it == max_iters:
                    speed = window_images * self.num_workers / max(window_time, 1e-9)
                    mean = window_loss / window_n if window_n else None
                    last_loss = mean if mean is not None else last_loss
                    state = self.data.state_dict()
                    self.log({"event": "train", "iteration": it,
                              "epoch": state.get("epoch"), "loss": mean, "lr": lr,
                              "img_per_s": speed, "bad_steps": self.bad_steps})
                    window_loss, window_n, window_images, window_time = 0.0, 0, 0, 0.0
                for callback in hooks:  # verification among them
                    callback(self, {"iteration": it, "loss": loss, "lr": lr,
                                    "skipped": loss is None, "images": X.shape[0],
                                    "seconds": dt, "max_iters": max_iters})
                if cfg.checkpoint_every and it % cfg.checkpoint_every == 0 \
                        and it < max_iters:
                    self.save_checkpoint()
        finally:
            if hooks and isinstance(hooks[0], ProgressBar):
                hooks[0].close()
        self._call(hooks, "on_train_end")  # the last verification
        if self.last_checkpoint is None or \
                not self.last_checkpoint.endswith(f"-{self.iteration:09d}"):
            self.save_checkpoint()
        seconds = time.perf_counter() - start_time
        self.log({"event": "end", "iteration": self.iteration,
                  "bad_steps": self.bad_steps, "seconds": seconds})
        result = TrainResult(
            iterations=self.iteration, bad_steps=self.bad_steps, last_loss=last_loss,
            best_metric=self.best_metric, best_iteration=self.best_iteration,
            results=self.results, checkpoint=self.last_checkpoint,
            log_path=self.log_path, seconds=seconds,
            images_per_second=step_images * self.num_workers / max(step_time, 1e-9))
        self._call(hooks, "on_end", result)
        return result

    def _call(self, hooks, name, *args):
        """Call the hook ``name`` of every callback that has it."""
        for callback in hooks:
            if hasattr(callback, name):
                getattr(callback, name)(self, *args)
