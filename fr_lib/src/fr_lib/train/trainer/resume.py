"""Checkpoint and resume glue of :class:`~fr_lib.train.trainer.FaceTrainer`:
what a checkpoint of a training run holds and how a run continues from one.

The files are written and verified by
:class:`~fr_lib.train.checkpoint.CheckpointManager`; this module decides what
goes in them: the backbone's and the head's parameters, the optimizer state
(renumbered by structural parameter names, so that a resumed process whose
blocks were numbered differently gets each state back on its parameter),
every context's own BatchNorm running statistics, and the run's position
(iteration, data position, seed, bad-step counters, best verification
metric, the objective's running state, AMP's loss scale). ``_claim``
makes the first ``fit()`` resume, or check that ``out_dir`` holds no other run.
"""
import logging
import os

import mxnet as mx

from ..checkpoint import CheckpointError, RunDirectoryError
from .guard import NonFiniteError

__all__ = ["CheckpointMixin"]

logger = logging.getLogger("fr_lib")


class CheckpointMixin:
    """Saving, loading and claiming a run (a part of
    :class:`~fr_lib.train.trainer.FaceTrainer`)."""

    def _state(self):
        state = {"iteration": self.iteration, "data": self.data.state_dict(),
                 "rng": {"seed": int(self.config.seed)}, "bad_steps": self.bad_steps,
                 "consecutive_bad": self._consecutive_bad,
                 "best_metric": self.best_metric, "best_iteration": self.best_iteration,
                 "config": self.config.to_dict(), "mxnet": mx.__version__,
                 "num_contexts": len(self.ctx),
                 "optimizer_params": self._optimizer_keys(),
                 "objective": self.objective.state_dict()}
        scaler = getattr(self.trainer, "_amp_loss_scaler", None)
        if scaler is not None:
            state["amp_loss_scale"] = float(scaler.loss_scale)
        return state

    def save_checkpoint(self):
        """Write a checkpoint of the current state (rank 0 only); returns its path.

        Nothing is written (None is returned) during a streak of skipped
        non-finite steps: the last good checkpoint stays the newest.

        Raises
        ------
        CheckpointError
            When the write fails; the previous checkpoints are intact.
        NonFiniteError
            When a weight, running statistic or optimizer state holds a
            non-finite value (a checkpoint is never written with one).
        """
        if not self.is_writer:
            return None
        if self._consecutive_bad:
            logger.warning("fr_lib: iteration %d: no checkpoint during a streak of %d "
                           "non-finite steps (the newest is still %s)", self.iteration,
                           self._consecutive_bad, self.checkpoints.latest())
            self.log({"event": "checkpoint_skipped", "iteration": self.iteration,
                      "consecutive_bad": self._consecutive_bad})
            return None
        bad = self.guard.nonfinite_tensors()
        if bad:
            raise NonFiniteError(
                f"iteration {self.iteration}: not writing a checkpoint, these tensors "
                f"hold non-finite values: {', '.join(bad[:8])}"
                f"{' ...' if len(bad) > 8 else ''}; the newest checkpoint is "
                f"{self.checkpoints.latest() or 'none'}")
        files = {"backbone.params": self.net.save_parameters,
                 "trainer.states": self.trainer.save_states}
        if self.head is not None:
            files["head.params"] = self.head.save_parameters
        if self.partial_fc is not None:
            files["partial_fc.params"] = self.objective.save_head
        if len(self.ctx) > 1 and self._context_stats():
            files["context_stats.params"] = self._save_context_stats
        path = self.checkpoints.save(self.iteration, files, self._state())
        self.last_checkpoint = path
        self.log({"event": "checkpoint", "iteration": self.iteration,
                  "path": os.path.basename(path)})
        return path

    def _context_stats(self):
        """``structural name -> Parameter`` of the running statistics
        (BatchNorm's mean and variance: parameters without a gradient)."""
        out = {}
        for prefix, block in (("backbone.", self.net), ("head.", self.head)):
            if block is not None:
                for key, p in block._collect_params_with_prefix().items():
                    if p.grad_req == "null":
                        out.setdefault(prefix + key, p)
        return out

    def _save_context_stats(self, path):
        """Every context's own running statistics: ``save_parameters`` keeps
        their mean over the contexts, and a run resumed from that mean would
        not continue the per-context statistics of an uninterrupted one."""
        mx.nd.save(path, {f"{key}@{i}": arr for key, p in self._context_stats().items()
                          for i, arr in enumerate(p.list_data())})

    def _load_context_stats(self, path):
        saved = mx.nd.load(path)
        for key, p in self._context_stats().items():
            for i, arr in enumerate(p.list_data()):
                if f"{key}@{i}" in saved:
                    arr[:] = saved[f"{key}@{i}"].as_in_context(arr.context)

    def _optimizer_keys(self):
        """Structural name (``backbone.<path>``, ``head.<path>``) of each
        parameter, in the optimizer's index order.

        gluon.Trainer numbers the parameters by their *sorted global names*
        (``dense9_weight`` sorts after ``dense10_weight``), which depend on
        how many blocks the process made before; the structural names do not.
        """
        names = {}
        for prefix, block in (("backbone.", self.net), ("head.", self.head)):
            if block is None:
                continue
            for key, p in block._collect_params_with_prefix().items():
                names.setdefault(id(p), prefix + key)
        return [names.get(id(p), p.name) for p in self.trainer._params]

    def _reorder_optimizer_states(self, saved, path):
        """Renumber loaded optimizer states from the checkpoint's parameter
        order ``saved`` (see :meth:`_optimizer_keys`) to this trainer's."""
        if not saved:
            return  # an older checkpoint: same process layout assumed
        current = self._optimizer_keys()
        if saved == current:
            return
        if sorted(saved) != sorted(current):
            missing = sorted(set(saved) ^ set(current))[:6]
            raise CheckpointError(f"{path}: the optimizer state belongs to other "
                                  f"parameters (differing: {missing})")
        where = {name: i for i, name in enumerate(current)}
        move = {i: where[name] for i, name in enumerate(saved)}
        for updater in getattr(self.trainer, "_updaters", None) or []:
            updater.states = {move[k]: v for k, v in updater.states.items()}
            updater.states_synced = {move[k]: v for k, v in
                                     updater.states_synced.items()}
        opt = self.trainer._optimizer
        for counts in opt._all_index_update_counts.values():
            moved = {move.get(k, k): v for k, v in counts.items()}
            counts.clear()
            counts.update(moved)

    def load_checkpoint(self, path=None):
        """Restore the state of a checkpoint (default: the newest).

        Parameters
        ----------
        path : str, optional

        Returns
        -------
        Checkpoint

        Raises
        ------
        CheckpointError
            When it is missing or corrupt (the message names the file), or
            holds a non-finite value.
        """
        ckpt = self.checkpoints.load(path)
        state = ckpt.state
        try:
            self.net.load_parameters(ckpt.file("backbone.params"), ctx=self.ctx)
            if self.head is not None:
                self.head.load_parameters(ckpt.file("head.params"), ctx=self.ctx)
            if self.objective.partial_fc_head:
                self.objective.load_head(ckpt.file("partial_fc.params"))
            self.trainer.load_states(ckpt.file("trainer.states"))
            self._reorder_optimizer_states(state.get("optimizer_params"), ckpt.path)
            # after load_states: its kvstore initialisation copies context 0's
            # values of every parameter (running statistics too) to the others
            if "context_stats.params" in ckpt.meta.get("files", {}) and \
                    int(state.get("num_contexts", 0)) == len(self.ctx):
                self._load_context_stats(ckpt.file("context_stats.params"))
        except CheckpointError:
            raise
        except Exception as err:  # an MXNet error on a file that passed the checksum
            raise CheckpointError(f"{ckpt.path}: cannot load ({err})") from err
        bad = self.guard.nonfinite_tensors()
        if bad:  # written before fr_lib checked: training on from it cannot work
            older = [os.path.basename(p) for it, p in self.checkpoints.list()
                     if it < ckpt.iteration]
            raise CheckpointError(
                f"{ckpt.path}: holds non-finite values ({', '.join(bad[:4])}"
                f"{' ...' if len(bad) > 4 else ''}); resume from an older checkpoint "
                f"(resume=<name>): {older or 'none'}")
        saved_seed = (state.get("rng") or {}).get("seed")
        if saved_seed is not None and int(saved_seed) != int(self.config.seed):
            raise ValueError(f"{ckpt.path}: the run was trained with seed={saved_seed}, "
                             f"this configuration has seed={self.config.seed}; resume "
                             f"with seed={saved_seed} to continue the same run")
        self.data.load_state_dict(state["data"])
        self.objective.load_state_dict(state.get("objective"))
        # (older checkpoints also stored NumPy's global state: not restored)
        self.iteration = int(state["iteration"])
        self.bad_steps = int(state.get("bad_steps", 0))
        self._consecutive_bad = int(state.get("consecutive_bad", 0))
        self.best_metric = state.get("best_metric")
        self.best_iteration = state.get("best_iteration")
        scaler = getattr(self.trainer, "_amp_loss_scaler", None)
        if scaler is not None and "amp_loss_scale" in state:
            scaler.loss_scale = state["amp_loss_scale"]
        self.last_checkpoint = ckpt.path
        return ckpt


    def _claim(self):
        """First fit(): resume, or check that ``out_dir`` holds no other run."""
        cfg = self.config
        if self.run_dir is None:  # out_dir=None: nothing to resume or claim
            return
        path = self.run_dir.resume_path(cfg.resume)
        if path is not None:
            ckpt = self.load_checkpoint(path)
            if self.is_writer:
                # newer checkpoints belong to the abandoned continuation of
                # the run: pruning keeps the highest iterations, and resume
                # picks the newest, so they must not stay beside the new ones
                later = [p for m in (self.checkpoints, self.best_checkpoints)
                         for it, p in m.list() if it > self.iteration]
                if later:
                    where = self.run_dir.move_aside(later)
                    logger.warning("fr_lib: resuming at iteration %d: the newer "
                                   "checkpoints %s moved to %s", self.iteration,
                                   [os.path.basename(p) for p in later], where)
            self.run_dir.truncate_log(self.iteration)
            self.log({"event": "resume", "iteration": self.iteration,
                      "path": os.path.basename(ckpt.path)})
            return
        if not self.is_writer:
            return
        previous = self.run_dir.previous_run()
        if previous and not (cfg.fresh or cfg.resume):
            raise RunDirectoryError(
                f"{self.out_dir} already holds a training run ({'; '.join(previous)}). "
                f"Continue it with resume=True (fr-train --set train.resume=true), or "
                f"start a new run there with fresh=True (fr-train --fresh), which "
                f"moves the old run to {self.out_dir}.old-<time>; or choose another "
                f"out_dir")
        old = [p for p in (self.log_path, self.checkpoints.directory)
               if os.path.exists(p)]
        if previous:
            where = self.run_dir.move_aside(old)
            logger.warning("fr_lib: %s: the previous run (%s) moved to %s; starting "
                           "a new run", self.out_dir, "; ".join(previous), where)
            os.makedirs(self.checkpoints.directory, exist_ok=True)
        elif os.path.exists(self.log_path):  # no record in it: nothing to keep
            os.remove(self.log_path)

