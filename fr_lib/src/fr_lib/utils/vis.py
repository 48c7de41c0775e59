"""Pictures of embeddings and margins (the loss chapter's figures).

Every function takes NumPy arrays, draws on a matplotlib ``Axes`` (a new
figure when ``ax`` is None) and returns the axes, so the book can place them
in grids.
"""
import math

import numpy as np

__all__ = ["plot_embeddings", "plot_embeddings_sphere", "target_logit",
           "plot_target_logits", "plot_decision_regions", "angle_statistics",
           "MARGIN_KINDS"]

MARGIN_KINDS = ("softmax", "sphereface", "cosface", "arcface", "combined")


def _unit(x):
    """Rows of ``x`` at unit length (fr_lib's one L2 normaliser)."""
    from ..metrics.embedding import l2_normalize  # metrics imports utils
    return l2_normalize(x, axis=1)


def _axes(ax, projection=None, figsize=(4, 4)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=figsize)
    return fig.add_subplot(111, projection=projection)


def plot_embeddings(embeddings, labels, ax=None, title=None, normalize=False,
                    max_points=3000, seed=0, label_centres=True):
    """Scatter 2-D embeddings, one colour per class, the class id at its centre.

    Book: introduced in ``chapter_loss/softmax-features`` (softmax 与二维嵌入).

    Parameters
    ----------
    embeddings : array (N, 2)
    labels : array (N,)
    normalize : bool
        Project onto the unit circle first (what the cosine losses see).
    max_points : int
        Random subset drawn so that large sets stay readable.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels).astype(int).ravel()
    if emb.ndim != 2 or emb.shape[1] != 2:
        raise ValueError(f"plot_embeddings needs (N, 2) embeddings, got {emb.shape}")
    if normalize:
        emb = _unit(emb)
    if len(emb) > max_points:
        keep = np.random.RandomState(seed).choice(len(emb), max_points, replace=False)
        emb, labels = emb[keep], labels[keep]
    ax = _axes(ax)
    import matplotlib.pyplot as plt
    cmap = plt.get_cmap("tab10")
    for c in np.unique(labels):
        pts = emb[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.5, color=cmap(c % 10))
        if label_centres and len(pts):
            centre = np.median(pts, axis=0)
            ax.text(centre[0], centre[1], str(c), fontsize=11, weight="bold",
                    ha="center", va="center", color="black",
                    bbox=dict(boxstyle="circle,pad=0.15", fc="white", alpha=0.7, lw=0))
    ax.set_aspect("equal", adjustable="datalim")
    ax.axhline(0, color="0.85", lw=0.5, zorder=0)
    ax.axvline(0, color="0.85", lw=0.5, zorder=0)
    if title:
        ax.set_title(title)
    return ax


def plot_embeddings_sphere(embeddings, labels, ax=None, title=None, max_points=2000,
                           seed=0):
    """3-D embeddings projected onto the unit sphere, with a wireframe sphere.

    Book: introduced in ``chapter_loss/angular-margin`` (角度间隔：SphereFace、CosFace 与
    ArcFace).
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels).astype(int).ravel()
    if emb.ndim != 2 or emb.shape[1] != 3:
        raise ValueError(f"plot_embeddings_sphere needs (N, 3) embeddings, got {emb.shape}")
    emb = _unit(emb)
    if len(emb) > max_points:
        keep = np.random.RandomState(seed).choice(len(emb), max_points, replace=False)
        emb, labels = emb[keep], labels[keep]
    ax = _axes(ax, projection="3d")
    import matplotlib.pyplot as plt
    u, v = np.mgrid[0:2 * np.pi:24j, 0:np.pi:12j]
    ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v),
                      color="0.85", lw=0.4)
    cmap = plt.get_cmap("tab10")
    for c in np.unique(labels):
        pts = emb[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=3, color=cmap(c % 10),
                   depthshade=False)
    ax.set_box_aspect((1, 1, 1))
    ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
    if title:
        ax.set_title(title)
    return ax


def target_logit(theta, kind="arcface", m1=1.0, m2=0.0, m3=0.0, m=None):
    """The true-class cosine after the margin, as a function of θ (radians).

    Book: introduced in ``chapter_loss/angular-margin`` (角度间隔：SphereFace、CosFace 与
    ArcFace).

    ``kind`` is one of :data:`MARGIN_KINDS`; ``m`` sets the one margin of
    SphereFace (integer), CosFace (m3) or ArcFace (m2); ``'combined'`` uses
    ``cos(m1·θ + m2) − m3``. The θ + m > π fallbacks are those of
    :mod:`fr_lib.loss.margin` (the curve then keeps decreasing).
    """
    theta = np.asarray(theta, dtype=np.float64)
    c = np.cos(theta)
    if kind == "softmax":
        return c
    if kind == "sphereface":
        mm = int(m if m is not None else m1)
        k = np.floor(mm * theta / math.pi)
        return (-1.0) ** k * np.cos(mm * theta) - 2 * k
    if kind == "cosface":
        return c - (m if m is not None else m3)
    if kind == "arcface":
        m1, m2, m3 = 1.0, (m if m is not None else m2), 0.0
    elif kind != "combined":
        raise ValueError(f"unknown margin kind {kind!r}; choose from {MARGIN_KINDS}")
    t_max = (math.pi - m2) / m1
    main = np.cos(m1 * theta + m2) - m3
    if t_max >= math.pi:
        return main
    shift = (m1 - 1) * t_max + m2
    return np.where(theta <= t_max, main, c - shift * math.sin(t_max) - m3)


def plot_target_logits(curves, ax=None, title=None):
    """Plot several target-logit curves.

    Book: introduced in ``chapter_loss/angular-margin`` (角度间隔：SphereFace、CosFace 与
    ArcFace).

    ``curves`` is a list of ``(label, kwargs)`` for :func:`target_logit`.
    """
    ax = _axes(ax, figsize=(5, 3.5))
    theta = np.linspace(0, math.pi, 361)
    for label, kwargs in curves:
        ax.plot(np.degrees(theta), target_logit(theta, **kwargs), label=label)
    ax.set_xlabel("θ (degrees)")
    ax.set_ylabel("target logit / s")
    ax.set_xlim(0, 180)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def plot_decision_regions(kind="arcface", s=30.0, m1=1.0, m2=0.0, m3=0.0, m=None,
                          angle=90.0, ax=None, title=None, resolution=241):
    """Two classes with unit weight vectors ``angle`` degrees apart: where on
    the unit circle each class *wins with its margin applied*.

    Book: introduced in ``chapter_loss/angular-margin`` (角度间隔：SphereFace、CosFace 与
    ArcFace).

    A point at angle φ is safely class 1 where
    ``target(θ1) > cos θ2`` and safely class 2 where ``target(θ2) > cos θ1``;
    the band in between is the margin's no man's land (grey). With no margin
    the two regions meet at the bisector.
    """
    ax = _axes(ax)
    half = math.radians(angle) / 2
    w = [(-half), (half)]        # class weight directions
    phi = np.linspace(-math.pi, math.pi, resolution * 4)
    th1 = np.abs(np.angle(np.exp(1j * (phi - w[0]))))
    th2 = np.abs(np.angle(np.exp(1j * (phi - w[1]))))
    kw = dict(kind=kind, m1=m1, m2=m2, m3=m3, m=m)
    win1 = target_logit(th1, **kw) > np.cos(th2)
    win2 = target_logit(th2, **kw) > np.cos(th1)
    colours = np.where(win1, 0, np.where(win2, 1, 2))
    palette = np.array(["tab:blue", "tab:orange", "0.75"])
    ax.scatter(np.cos(phi), np.sin(phi), c=palette[colours], s=6)
    for k, wk in enumerate(w):
        ax.annotate("", xy=(math.cos(wk), math.sin(wk)), xytext=(0, 0),
                    arrowprops=dict(arrowstyle="->", color=palette[k], lw=2))
        ax.text(1.2 * math.cos(wk), 1.2 * math.sin(wk), f"W{k + 1}",
                ha="center", va="center")
    ax.set_xlim(-1.4, 1.4), ax.set_ylim(-1.4, 1.4)
    ax.set_aspect("equal")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title or kind)
    return ax


def _nearest_angles(cos):
    """Angle (degrees) from each row's direction to its nearest other one,
    given the matrix of cosines between the directions."""
    off = cos - 3 * np.eye(len(cos))          # exclude each class itself
    return np.degrees(np.arccos(np.clip(off.max(axis=1), -1, 1)))


def angle_statistics(embeddings, labels):
    """Angles (degrees) that say how compact and how separated classes are.

    Book: introduced in ``chapter_loss/center-ring`` (中心损失与环损失).

    Returns
    -------
    dict
        ``intra``: mean angle between a sample and its class's mean direction;
        ``inter_min`` / ``inter_mean``: smallest / mean angle between two
        class mean directions; ``inter_nearest``: the angle from each class
        mean direction to its nearest other one, averaged over the classes
        (one crowded pair moves it less than ``inter_min``);
        ``ratio`` = inter_min / intra (larger is better).
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels).astype(int).ravel()
    if len(emb) != len(labels):
        raise ValueError(f"{len(emb)} embeddings but {len(labels)} labels")
    unit = _unit(emb)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError("angle_statistics needs at least two classes")
    centres = np.stack([unit[labels == c].mean(axis=0) for c in classes])
    centres = _unit(centres)
    index = {c: i for i, c in enumerate(classes)}
    own = centres[[index[c] for c in labels]]
    intra = np.degrees(np.arccos(np.clip((unit * own).sum(axis=1), -1, 1))).mean()
    cos = np.clip(centres @ centres.T, -1, 1)
    pairs = np.degrees(np.arccos(cos[np.triu_indices(len(classes), 1)]))
    return {"intra": float(intra), "inter_min": float(pairs.min()),
            "inter_mean": float(pairs.mean()),
            "inter_nearest": float(_nearest_angles(cos).mean()),
            "ratio": float(pairs.min() / max(intra, 1e-12))}
