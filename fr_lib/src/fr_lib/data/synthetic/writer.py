"""Writing a synthetic data set: the training rec and the verification pairs
of held-out identities (:func:`write_dataset`), rendered by worker processes."""
import os
import time

import numpy as np

from .faces import SIZE, SyntheticFaces, _rng

__all__ = ["write_dataset"]


def _render_chunk(args):
    """Worker: JPEG bytes of ``[(i, j), ...]`` (module level: picklable)."""
    seed, difficulty, num_identities, tasks, quality = args
    from ..transforms import encode_jpeg
    gen = _worker_gen(seed, difficulty, num_identities)
    return [encode_jpeg(gen.render(i, j), quality) for i, j in tasks]


_WORKER_GEN = {}


def _worker_gen(seed, difficulty, num_identities):
    key = (seed, difficulty, num_identities)
    if key not in _WORKER_GEN:
        _WORKER_GEN.clear()
        _WORKER_GEN[key] = SyntheticFaces(num_identities, seed, difficulty)
    return _WORKER_GEN[key]


def render_jpegs(tasks, seed, difficulty, num_identities, workers=1, quality=95,
                 chunk=64, progress=None):
    """Yield the JPEG bytes of ``tasks`` (``(identity, image)`` pairs) in order,
    rendered by ``workers`` processes (1: in this process)."""
    tasks = list(tasks)
    chunks = [(seed, difficulty, num_identities, tasks[k:k + chunk], quality)
              for k in range(0, len(tasks), chunk)]
    if workers <= 1:
        results = map(_render_chunk, chunks)
        pool = None
    else:
        import multiprocessing as mp
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods()
                             else None)
        # No cv2.setNumThreads() in the children: after a fork it deadlocks
        # when the parent has used OpenCV's thread pool (e.g. a Haar cascade).
        from ..tools import child_init
        pool = ctx.Pool(workers, initializer=child_init)
        results = pool.imap(_render_chunk, chunks)
    try:
        for block in results:
            for jpeg in block:
                if progress is not None:
                    progress.update(1)
                yield jpeg
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def _val_pairs(num_identities, num_val_identities, num_pairs, seed):
    """(identity, image) of both sides of each pair and the flags.

    Pairs alternate genuine/impostor, so any 10 contiguous folds are balanced.
    Held-out identities are ``num_identities .. num_identities+V-1``; every
    image index is used once per identity, so no image appears twice.
    """
    r = _rng(seed, 3)
    used = {}

    def next_image(ident):
        used[ident] = used.get(ident, 0) + 1
        return used[ident] - 1

    sides, issame = [], []
    held = np.arange(num_identities, num_identities + num_val_identities)
    for k in range(num_pairs):
        if k % 2 == 0:
            a = b = int(r.choice(held))
        else:
            a, b = (int(x) for x in r.choice(held, 2, replace=False))
        sides += [(a, next_image(a)), (b, next_image(b))]
        issame.append(k % 2 == 0)
    return sides, issame


def write_dataset(out_dir, num_identities=100, images_per_identity=20,
                  num_val_pairs=600, seed=0, difficulty=0.5, workers=1,
                  num_val_identities=None, val_name="synth_val", quality=95,
                  progress=False):
    """Write a synthetic training set and verification pairs.

    Book: introduced in ``chapter_data/bin-pairs`` (`.bin` 验证对).

    ``out_dir`` gets ``train.rec``, ``train.idx``, ``property`` (InsightFace
    layout, identities ``0 .. num_identities-1`` with
    ``images_per_identity`` images each) and ``<val_name>.bin`` with
    ``num_val_pairs`` pairs, alternately genuine and impostor, drawn from
    **held-out identities** (indices ``num_identities`` and up, never seen in
    training), so a verification score measures generalisation to new people,
    as LFW does.

    Parameters
    ----------
    out_dir : str
    num_identities, images_per_identity : int
    num_val_pairs : int
        Pairs in the ``.bin`` (0: no ``.bin``); must be even.
    seed : int
    difficulty : float in [0, 1]
    workers : int
        Rendering processes (the output is identical for any value).
    num_val_identities : int or None
        Held-out identities for the pairs; default
        ``max(2, num_identities // 4)``.
    val_name : str
    quality : int
        JPEG quality.
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        Paths (``rec``, ``idx``, ``property``, ``bin``), ``num_images``,
        ``num_classes``, ``num_val_pairs``, ``val_identities`` (range),
        ``seconds`` and ``images_per_second`` (rendering + encoding + writing).
    """
    from ..recordio import write_face_rec
    from ..binfile import write_bin
    if images_per_identity < 1:
        raise ValueError(f"images_per_identity must be >= 1, got "
                         f"{images_per_identity}")
    if num_val_pairs < 0 or num_val_pairs % 2:
        raise ValueError(f"num_val_pairs must be even and >= 0 (half genuine, "
                         f"half impostor), got {num_val_pairs}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    SyntheticFaces(num_identities, seed, difficulty)  # checks the arguments
    nval = max(2, num_identities // 4) if num_val_identities is None \
        else int(num_val_identities)
    if nval < 2 and num_val_pairs:
        raise ValueError("num_val_identities must be >= 2 for impostor pairs")
    total = num_identities * images_per_identity
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total + 2 * num_val_pairs, desc="rendering faces",
                   unit="img")
    try:
        tasks = [(i, j) for i in range(num_identities)
                 for j in range(images_per_identity)]
        jpegs = render_jpegs(tasks, seed, difficulty, num_identities, workers,
                             quality, progress=bar)
        items = ((i, jpeg) for (i, _), jpeg in zip(tasks, jpegs))
        info = write_face_rec(out_dir, items, image_size=(SIZE, SIZE),
                              num_classes=num_identities, verify=False)
        bin_path = None
        if num_val_pairs:
            sides, issame = _val_pairs(num_identities, nval, num_val_pairs, seed)
            images = list(render_jpegs(sides, seed, difficulty, num_identities,
                                       workers, quality, progress=bar))
            bin_path = write_bin(os.path.join(os.path.dirname(info["rec"]),
                                              val_name + ".bin"), images, issame)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    return {"out_dir": os.path.dirname(info["rec"]), "rec": info["rec"],
            "idx": info["idx"], "property": info["property"], "bin": bin_path,
            "num_images": info["num_images"], "num_classes": info["num_classes"],
            "image_size": (SIZE, SIZE), "num_val_pairs": num_val_pairs,
            "val_identities": (range(num_identities, num_identities + nval)
                               if num_val_pairs else range(0)),
            "seed": seed, "difficulty": difficulty, "workers": workers,
            "seconds": seconds,
            "images_per_second": (total + 2 * num_val_pairs) / max(seconds, 1e-9)}
