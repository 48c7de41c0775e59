"""Reading and plotting a run's JSON-lines log (``out_dir/log.jsonl``, written
by :class:`~fr_lib.train.trainer.run_dir.RunDirectory`)."""
import json
import os

import numpy as np

__all__ = ["read_log", "plot_log"]


def read_log(path):
    """Read a JSON-lines training log.

    Book: introduced in ``chapter_training/reliable-training`` (可靠的训练：调度、验证与断点续训).

    Parameters
    ----------
    path : str
        ``log.jsonl``, or the run's ``out_dir``.

    Returns
    -------
    dict
        ``event -> list of records`` (``'train'``, ``'verify'``,
        ``'bad_step'``, ``'checkpoint'`` ...). A damaged line (cut by a
        crash) is skipped.
    """
    if os.path.isdir(path):
        path = os.path.join(path, "log.jsonl")
    events = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            events.setdefault(rec.get("event", "train"), []).append(rec)
    return events


def plot_log(path, axes=None):
    """Plot a training log: loss, learning rate and verification accuracy.

    Book: introduced in ``chapter_training/reliable-training`` (可靠的训练：调度、验证与断点续训).

    Parameters
    ----------
    path : str
        ``log.jsonl`` or the run's ``out_dir``.
    axes : sequence of two matplotlib Axes, optional
        Where to draw the loss (with the learning rate on a twin axis) and
        the accuracy; a new figure when None.

    Returns
    -------
    numpy.ndarray of Axes
    """
    import matplotlib.pyplot as plt

    events = read_log(path)
    train_recs = [r for r in events.get("train", []) if r.get("loss") is not None]
    verify = events.get("verify", [])
    if axes is None:
        # constrained layout makes room for the twin axis's label between
        # the two panels (without it "learning rate" overlaps the accuracy axis)
        _, axes = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    ax_loss, ax_acc = axes[0], axes[1]
    its = [r["iteration"] for r in train_recs]
    ax_loss.plot(its, [r["loss"] for r in train_recs], color="C0", label="loss")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_lr = ax_loss.twinx()
    ax_lr.plot(its, [r["lr"] for r in train_recs], color="C1", ls="--", label="lr")
    ax_lr.set_ylabel("learning rate")
    bad = events.get("bad_step", [])
    for r in bad:
        ax_loss.axvline(r["iteration"], color="red", alpha=0.3, lw=0.8)
    ax_loss.legend(handles=ax_loss.lines[:1] + ax_lr.lines[:1], loc="upper right")
    names = sorted({k for r in verify for k, v in r.items() if isinstance(v, dict)})
    for name in names:
        pts = [(r["iteration"], r[name]["accuracy"]) for r in verify if name in r]
        ax_acc.plot(*zip(*pts), marker="o", label=name)
    ax_acc.set_xlabel("iteration")
    ax_acc.set_ylabel("verification accuracy")
    if names:
        ax_acc.legend(loc="lower right")
    ax_acc.grid(True, alpha=0.3)
    return np.asarray(axes)
