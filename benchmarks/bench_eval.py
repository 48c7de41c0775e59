"""Verification protocol on 6,000 pairs: fr_lib's vectorised code vs loops.

Times, in one run and on the same random data (6,000 pairs of 512-d
embeddings, half genuine), the whole evaluation of one set: pair distances,
10-fold accuracy over the 400 thresholds np.arange(0, 4, 0.01), ROC curve,
AUC, EER and TAR@FAR at 1e-1..1e-4.

- ``fr_lib``: :func:`fr_lib.metrics.pair_distances` +
  :func:`fr_lib.metrics.evaluate_verification` (sort + bincount/cumsum);
- ``bool-matrix``: the same k-fold accuracy from a chunked
  (thresholds x pairs) boolean matrix, the other vectorised candidate;
- ``loops``: the straightforward version (as in InsightFace's
  ``calculate_roc``): a Python loop over folds and thresholds with one NumPy
  comparison each, and a loop over distinct distances for the ROC.

    .venv/bin/python benchmarks/bench_eval.py [--repeat 20]
"""
import argparse
import time

import numpy as np

import fr_lib  # noqa: F401  (makes mxnet importable before fr_lib.metrics)
from fr_lib.metrics import evaluate_verification, pair_distances

THRESHOLDS = np.arange(0, 4, 0.01)
FARS = (1e-1, 1e-2, 1e-3, 1e-4)


def make_pairs(num_pairs=6000, dim=512, seed=0):
    rng = np.random.RandomState(seed)
    e1 = rng.normal(size=(num_pairs, dim)).astype(np.float32)
    e2 = rng.normal(size=(num_pairs, dim)).astype(np.float32)
    same = np.arange(num_pairs) % 2 == 0
    e2[same] = e1[same] + 7.0 * rng.normal(size=(same.sum(), dim))
    return e1, e2, same


def fold_slices(n, k=10):
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    bounds = np.cumsum([0] + sizes)
    return [(bounds[i], bounds[i + 1]) for i in range(k)]


def kfold_loops(dist, same, thresholds=THRESHOLDS):
    accs = []
    for lo, hi in fold_slices(dist.size):
        train = np.ones(dist.size, bool)
        train[lo:hi] = False
        train_acc = [np.mean(np.less(dist[train], t) == same[train]) for t in thresholds]
        best = thresholds[int(np.argmax(train_acc))]
        accs.append(np.mean(np.less(dist[lo:hi], best) == same[lo:hi]))
    return np.mean(accs), np.std(accs)


def kfold_bool_matrix(dist, same, thresholds=THRESHOLDS, chunk=100):
    folds = fold_slices(dist.size)
    correct = np.zeros((len(folds), thresholds.size), np.int64)
    for c in range(0, thresholds.size, chunk):
        pred = dist[None, :] < thresholds[c:c + chunk, None]   # (chunk, pairs)
        right = pred == same[None, :]
        for f, (lo, hi) in enumerate(folds):
            correct[f, c:c + chunk] = right[:, lo:hi].sum(axis=1)
    train = correct.sum(0) - correct
    best = np.argmax(train, axis=1)
    sizes = np.array([hi - lo for lo, hi in folds])
    accs = correct[np.arange(len(folds)), best] / sizes
    return np.mean(accs), np.std(accs)


def roc_loops(dist, same):
    n_pos, n_neg = same.sum(), (~same).sum()
    thr = np.r_[-np.inf, np.unique(dist)]
    far = np.array([np.sum((dist <= t) & ~same) / n_neg for t in thr])
    tar = np.array([np.sum((dist <= t) & same) / n_pos for t in thr])
    area = sum((far[i + 1] - far[i]) * (tar[i + 1] + tar[i]) / 2 for i in range(len(far) - 1))
    frr = 1 - tar
    i = next(j for j in range(len(far)) if far[j] >= frr[j])
    g0, g1 = far[i - 1] - frr[i - 1], far[i] - frr[i]
    eer = far[i - 1] + (-g0 / (g1 - g0)) * (far[i] - far[i - 1])
    tars = {}
    for target in FARS:
        ok = [j for j in range(len(far)) if far[j] <= target + 1e-12]
        tars[target] = tar[ok[-1]] if n_neg * target >= 1 else float("nan")
    return area, eer, tars


def normalized_distances(e1, e2):
    n1 = e1 / np.linalg.norm(e1, axis=1, keepdims=True)
    n2 = e2 / np.linalg.norm(e2, axis=1, keepdims=True)
    return np.sum((n1 - n2) ** 2, axis=1)


def protocol_fr_lib(dist, same):
    return evaluate_verification(dist, same, thresholds=THRESHOLDS, fars=FARS)


def protocol_bool_matrix(dist, same):
    # k-fold from the boolean matrix; ROC figures from fr_lib (one threshold)
    return (kfold_bool_matrix(dist, same),
            evaluate_verification(dist, same, thresholds=THRESHOLDS[:1], fars=FARS))


def protocol_loops(dist, same):
    return kfold_loops(dist, same), roc_loops(dist, same)


def median_time(fn, repeat, *args):
    """Median wall time of ``fn(*args)`` over ``repeat`` runs, after one warm-up."""
    fn(*args)  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--repeat-loops", type=int, default=3)
    args = parser.parse_args()
    e1, e2, same = make_pairs()
    dist = pair_distances(e1, e2)

    ours = protocol_fr_lib(dist, same)
    (acc_b, _), _ = protocol_bool_matrix(dist, same)
    (acc_l, std_l), (auc_l, eer_l, _) = protocol_loops(normalized_distances(e1, e2), same)
    assert np.isclose(ours.accuracy, acc_l) and np.isclose(ours.accuracy, acc_b)
    assert np.isclose(ours.auc, auc_l) and np.isclose(ours.eer, eer_l)
    print(f"6000 pairs x 512-d: accuracy {ours.accuracy:.4f} +- {ours.std:.4f}, "
          f"AUC {ours.auc:.4f}, EER {ours.eer:.4f} (the three implementations agree)")

    rows = [
        ("protocol from distances (10-fold + ROC + AUC + EER + TAR@FAR)", [
            ("fr_lib", median_time(protocol_fr_lib, args.repeat, dist, same)),
            ("bool-matrix", median_time(protocol_bool_matrix, args.repeat, dist, same)),
            ("loops", median_time(protocol_loops, args.repeat_loops, dist, same))]),
        ("whole evaluation from embeddings (distances + the above)", [
            ("fr_lib", median_time(lambda: protocol_fr_lib(pair_distances(e1, e2), same),
                                   args.repeat)),
            ("loops", median_time(lambda: protocol_loops(normalized_distances(e1, e2), same),
                                  args.repeat_loops))]),
    ]
    for title, timings in rows:
        print(f"\n{title}")
        print(f"  {'implementation':<14}{'median (s)':>12}{'vs fr_lib':>11}")
        base = timings[0][1]
        for name, t in timings:
            print(f"  {name:<14}{t:>12.4f}{t / base:>10.1f}x")


if __name__ == "__main__":
    main()
