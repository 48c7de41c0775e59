"""The one sharding rule of fr_lib's data sources (:func:`shard`) and the
randomness keyed by a position (:func:`epoch_order`, :func:`mirror_flips`), so
that a resumed stream needs nothing but its position."""
import numbers

import numpy as np

from ...utils.checks import check_int

__all__ = ["check_part", "shard", "shard_range", "mirror_flips", "epoch_order",
           "global_batches"]


def check_part(num_parts, part_index):
    """``(num_parts, part_index)`` as ints, or a ValueError naming the bad one."""
    num_parts = check_int("num_parts", num_parts, 1)
    if (isinstance(part_index, bool) or not isinstance(part_index, numbers.Integral)
            or not 0 <= part_index < num_parts):
        raise ValueError(f"part_index must be an integer in [0, {num_parts}) "
                         f"for num_parts={num_parts}, got {part_index!r}")
    return num_parts, int(part_index)


def shard(n, num_parts, part_index, remainder="keep"):
    """Positions ``0 .. n-1`` that part ``part_index`` of ``num_parts`` takes.

    Book: introduced in ``chapter_data/sampling`` (P×K 采样与数据分片).

    The rule of every fr_lib data source: the positions are cut into
    ``num_parts`` contiguous blocks in order, and part ``i`` takes block
    ``i``. The blocks have ``n // num_parts`` positions, and the first
    ``n % num_parts`` blocks one more. ``remainder`` says what to do with
    those extra positions:

    - ``'keep'``: nothing; the parts differ in size by at most one and
      together hold every position exactly once.
    - ``'drop'``: every part takes only the first ``n // num_parts`` of its
      block (equal sizes; the last position of each longer block is left
      out).
    - ``'pad'``: every part takes ``ceil(n / num_parts)`` positions: a short
      part ``j`` (``j >= n % num_parts``) appends position
      ``(j - n % num_parts) % n``, so the padding positions differ where
      ``n`` allows (equal sizes; every position at least once).

    Parameters
    ----------
    n : int
        Number of positions (samples, identities, records).
    num_parts : int
        Number of parts (workers), >= 1.
    part_index : int
        This part, in ``[0, num_parts)``.
    remainder : {'keep', 'drop', 'pad'}

    Returns
    -------
    numpy.ndarray
        int64 positions, increasing except for a ``'pad'`` position.

    Examples
    --------
    >>> [shard(10, 4, i).tolist() for i in range(4)]
    [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    >>> [shard(10, 4, i, 'drop').tolist() for i in range(4)]
    [[0, 1], [3, 4], [6, 7], [8, 9]]
    >>> [shard(10, 4, i, 'pad').tolist() for i in range(4)]
    [[0, 1, 2], [3, 4, 5], [6, 7, 0], [8, 9, 1]]
    """
    n = check_int("n", n, 0)
    num_parts, part_index = check_part(num_parts, part_index)
    if remainder not in ("keep", "drop", "pad"):
        raise ValueError(f"remainder must be 'keep', 'drop' or 'pad', got {remainder!r}")
    start, stop = shard_range(n, num_parts, part_index)
    base, extra = divmod(n, num_parts)
    if remainder == "drop":
        stop = start + base
    positions = np.arange(start, stop, dtype=np.int64)
    if remainder == "pad" and extra and part_index >= extra:
        positions = np.append(positions, np.int64((part_index - extra) % n))
    return positions


def shard_range(n, num_parts, part_index):
    """The block ``[start, stop)`` of positions that part ``part_index`` of
    ``num_parts`` holds under :func:`shard`'s rule (``remainder='keep'``):
    contiguous, in order, sizes ``n // num_parts`` plus one for the first
    ``n % num_parts`` parts. Partial FC cuts its class centres with it.

    >>> [shard_range(10, 4, i) for i in range(4)]
    [(0, 3), (3, 6), (6, 8), (8, 10)]
    """
    n = check_int("n", n, 0)
    num_parts, part_index = check_part(num_parts, part_index)
    base, extra = divmod(n, num_parts)
    start = part_index * base + min(part_index, extra)
    return start, start + base + (part_index < extra)


def mirror_flips(seed, epoch, batch, part_index, n):
    """Mirror decisions of ``n`` samples of a batch: a function of its position
    only (``default_rng([seed, epoch, batch, part_index, 1])``), so that a
    resumed stream flips the same images."""
    rng = np.random.default_rng([seed, epoch, batch, part_index, 1])
    return rng.integers(0, 2, n).astype(bool)


def epoch_order(seed, epoch, n, shuffle):
    """The order of ``n`` samples in an epoch: ``default_rng([seed, epoch])``'s
    permutation, or ``0 .. n-1`` without ``shuffle``."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def global_batches(order, batch_size, num_parts, part_index, keep_last=False):
    """This part's batches of an epoch ``order`` (lists of positions): the order
    is cut into global batches of ``num_parts * batch_size`` and each is split
    with :func:`shard`, so that the parts' ``b``-th batches together are the
    ``b``-th batch of one worker with the global batch size. With
    ``keep_last`` a final incomplete global batch is split too (its
    parts may be shorter, and a part with nothing of it has one batch less);
    otherwise it is dropped."""
    size = num_parts * batch_size
    full, rest = divmod(len(order), size)
    mine = shard(size, num_parts, part_index)
    out = [order[b * size:(b + 1) * size][mine].tolist() for b in range(full)]
    if keep_last and rest:
        last = order[full * size:][shard(rest, num_parts, part_index)]
        if last.size:
            out.append(last.tolist())
    return out
