"""Verification and identification metrics against hand calculations and loops.

Every expected value is either worked out by hand in a comment or computed by a
plain loop written here (one threshold, one fold, one probe at a time), never
by the vectorised code under test.
"""
from collections import namedtuple

import mxnet as mx
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve
from sklearn.model_selection import KFold

from fr_lib.metrics import (DEFAULT_THRESHOLDS, VerificationEvaluator, auc,
                            eer, evaluate_verification, identification_rank_k,
                            pair_distances, plot_roc, results_table, roc_curve,
                            split_gallery_probe, tar_at_far, verification_accuracy)

GRID = np.arange(0, 4, 0.01)


# --------------------------------------------------------------------------
# Independent loop implementations
# --------------------------------------------------------------------------

def loop_kfold(dist, same, num_folds, thresholds):
    """InsightFace's calculate_roc, written out: folds x thresholds loops."""
    accs, best_thr = [], []
    for train, test in KFold(n_splits=num_folds, shuffle=False).split(dist):
        train_acc = []
        for t in thresholds:
            right = sum(1 for i in train if (dist[i] < t) == same[i])
            train_acc.append(right / len(train))
        best = 0
        for j in range(len(thresholds)):  # the first best one
            if train_acc[j] > train_acc[best]:
                best = j
        t = thresholds[best]
        accs.append(sum(1 for i in test if (dist[i] < t) == same[i]) / len(test))
        best_thr.append(t)
    return np.array(accs), np.array(best_thr)


def loop_roc(dist, same):
    thr = [-np.inf] + sorted(set(dist.tolist()))
    n_pos, n_neg = sum(same), len(same) - sum(same)
    far = [sum(1 for d, s in zip(dist, same) if d <= t and not s) / n_neg for t in thr]
    tar = [sum(1 for d, s in zip(dist, same) if d <= t and s) / n_pos for t in thr]
    return np.array(far), np.array(tar), np.array(thr)


def random_pairs(seed, n, ties=False):
    rng = np.random.RandomState(seed)
    same = rng.rand(n) < 0.5
    dist = np.where(same, rng.normal(0.9, 0.35, n), rng.normal(1.6, 0.35, n))
    dist = np.clip(dist, 0, 3.99)
    if ties:  # distances exactly on grid values, many shared: boundary + ties
        dist = GRID[np.round(dist * 20).astype(int) * 5]
    return dist, same


# --------------------------------------------------------------------------
# k-fold accuracy
# --------------------------------------------------------------------------

def test_obvious_separation_ten_folds():
    # 20 pairs, alternating genuine (0.305) / impostor (1.705): every training
    # set is perfect for 0.305 < t <= 1.705, the first grid value is 0.31.
    same = np.arange(20) % 2 == 0
    dist = np.where(same, 0.305, 1.705)
    r = verification_accuracy(dist, same)
    assert r.accuracy == 1.0 and r.std == 0.0
    assert_array_equal(r.fold_accuracies, np.ones(10))
    assert_allclose(r.best_thresholds, np.full(10, 0.31))


def test_two_folds_by_hand_with_a_tie():
    # Fold 0 (pairs 0-9): genuine .25 .35 .45 .55 1.15, impostor 1.05 1.25 ...
    # Fold 1 (pairs 10-19): genuine .25 .65 .75 .85 .88, impostor .95 1.25 ...
    f0 = [0.25, 0.35, 0.45, 0.55, 1.15, 1.05, 1.25, 1.35, 1.45, 1.55]
    f1 = [0.25, 0.65, 0.75, 0.85, 0.88, 0.95, 1.25, 1.35, 1.45, 1.55]
    same = np.array(([1] * 5 + [0] * 5) * 2)
    r = verification_accuracy(f0 + f1, same, num_folds=2)
    # Test fold 0, trained on fold 1: perfect on (0.88, 0.95] -> t = 0.89;
    # fold 0 then misses genuine 1.15 only: 9/10.
    # Test fold 1, trained on fold 0: 9/10 on (0.55, 1.05] and on (1.15, 1.25];
    # the first, t = 0.56, accepts only genuine 0.25 of fold 1: 6/10.
    assert_allclose(r.best_thresholds, [0.89, 0.56])
    assert_allclose(r.fold_accuracies, [0.9, 0.6])
    assert_allclose([r.accuracy, r.std], [0.75, 0.15])


def test_distance_equal_to_threshold_is_not_accepted():
    # predict "same" iff distance < threshold (strict), as InsightFace
    t = GRID[50]
    r = verification_accuracy([t, t], [True, True], num_folds=2, thresholds=[t])
    assert_array_equal(r.fold_accuracies, [0.0, 0.0])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_kfold_matches_loops(seed, ties):
    n = [57, 203, 120, 96][seed]  # uneven fold sizes included
    dist, same = random_pairs(seed, n, ties)
    folds = [10, 10, 7, 3][seed]
    thresholds = GRID[::4] if seed % 2 else GRID  # keep the loop fast
    r = verification_accuracy(dist, same, num_folds=folds, thresholds=thresholds)
    accs, thr = loop_kfold(dist, same, folds, thresholds)
    assert_allclose(r.fold_accuracies, accs, rtol=0, atol=1e-12)
    assert_array_equal(r.best_thresholds, thr)
    assert_allclose([r.accuracy, r.std], [np.mean(accs), np.std(accs)], atol=1e-12)


def test_unsorted_thresholds_keep_callers_order_for_ties():
    dist, same = random_pairs(5, 80, ties=True)
    rng = np.random.RandomState(5)
    thresholds = rng.permutation(np.r_[GRID[::5], GRID[::10]])  # repeats too
    r = verification_accuracy(dist, same, thresholds=thresholds)
    accs, thr = loop_kfold(dist, same, 10, thresholds)
    assert_allclose(r.fold_accuracies, accs, atol=1e-12)
    assert_array_equal(r.best_thresholds, thr)


def test_default_grid_and_label_types():
    assert_allclose(DEFAULT_THRESHOLDS, GRID)
    assert not DEFAULT_THRESHOLDS.flags.writeable
    dist, same = random_pairs(6, 40)
    a = verification_accuracy(dist, same)
    b = verification_accuracy(mx.nd.array(dist, dtype="float64"), same.astype(int).tolist())
    assert_array_equal(a.fold_accuracies, b.fold_accuracies)


def test_input_validation():
    with pytest.raises(ValueError, match="differ in length"):
        verification_accuracy(np.zeros(20), np.zeros(19, bool))
    with pytest.raises(ValueError, match="boolean"):
        verification_accuracy(np.zeros(20), np.r_[np.zeros(19), 2])
    with pytest.raises(ValueError, match="boolean"):
        verification_accuracy(np.zeros(2), ["yes", "no"], num_folds=2)
    with pytest.raises(ValueError, match="at least num_folds=10"):
        verification_accuracy(np.zeros(9), np.zeros(9, bool))
    with pytest.raises(ValueError, match="num_folds"):
        verification_accuracy(np.zeros(9), np.zeros(9, bool), num_folds=1)
    with pytest.raises(ValueError, match="NaN"):
        verification_accuracy(np.r_[np.zeros(19), np.nan], np.zeros(20, bool))
    with pytest.raises(ValueError, match="one-dimensional"):
        verification_accuracy(np.zeros((10, 2)), np.zeros(10, bool))
    with pytest.raises(ValueError, match="thresholds"):
        verification_accuracy(np.zeros(10), np.zeros(10, bool), thresholds=[])


# --------------------------------------------------------------------------
# ROC, AUC, EER, TAR@FAR
# --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_roc_and_auc_match_loops_and_sklearn(seed, ties):
    dist, same = random_pairs(seed, 150, ties)
    far, tar, thr = roc_curve(dist, same)
    ref_far, ref_tar, ref_thr = loop_roc(dist, same)
    assert_allclose(far, ref_far, atol=1e-15)
    assert_allclose(tar, ref_tar, atol=1e-15)
    assert_array_equal(thr, ref_thr)
    assert_allclose(auc(dist, same), roc_auc_score(same, -dist), atol=1e-12)
    # scikit-learn's curve on similarity = -distance has the same points
    sk_far, sk_tar, _ = sk_roc_curve(same, -dist, drop_intermediate=False)
    assert_allclose(far, sk_far, atol=1e-15)
    assert_allclose(tar, sk_tar, atol=1e-15)


def test_eer_by_hand():
    # genuine .1 .2 .6 .9, impostor .5 .7 .8 1.0: accepting d <= 0.6 gives
    # FAR 1/4 and TAR 3/4, so FAR = 1 - TAR = 0.25 exactly at a point.
    same = [1, 1, 1, 1, 0, 0, 0, 0]
    assert_allclose(eer([0.1, 0.2, 0.6, 0.9, 0.5, 0.7, 0.8, 1.0], same), 0.25)
    # genuine .1 .5 .9, impostor .5 .8: from (FAR 0, TAR 1/3) at d <= .1 the
    # tie at .5 jumps to (1/2, 2/3). On that segment FAR = w/2, TAR = 1/3 + w/3;
    # FAR = 1 - TAR gives w = 4/5, EER = 2/5.
    assert_allclose(eer([0.1, 0.5, 0.9, 0.5, 0.8], [1, 1, 1, 0, 0]), 0.4)


def test_perfect_and_reversed_separation():
    d = [0.1, 0.2, 1.0, 1.1]
    s = [1, 1, 0, 0]
    assert auc(d, s) == 1.0 and eer(d, s) == 0.0
    assert auc(d, [0, 0, 1, 1]) == 0.0 and eer(d, [0, 0, 1, 1]) == 1.0


def test_tar_at_far_by_hand():
    genuine = [0.1, 0.2, 0.5, 0.7, 0.95]
    impostor = [0.3, 0.6, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]
    d = genuine + impostor
    s = [True] * 5 + [False] * 10
    r = tar_at_far(d, s, fars=(0.1, 0.2, 0.3, 0.01))
    assert list(r) == [0.1, 0.2, 0.3, 0.01]
    # FAR <= 0.1: one impostor (0.3) may pass -> accept up to 0.5: TAR 3/5
    assert (r[0.1].tar, r[0.1].far, r[0.1].threshold, r[0.1].reason) == (0.6, 0.1, 0.5, None)
    # FAR <= 0.2: impostors 0.3, 0.6 -> accept up to 0.7: TAR 4/5
    assert (r[0.2].tar, r[0.2].threshold) == (0.8, 0.7)
    # FAR <= 0.3: up to 0.95, all genuine pairs
    assert (r[0.3].tar, r[0.3].far, r[0.3].threshold) == (1.0, 0.3, 0.95)
    # 10 impostor pairs cannot measure FAR 1e-2
    assert np.isnan(r[0.01].tar) and np.isnan(r[0.01].threshold)
    assert "not enough impostor pairs" in r[0.01].reason


def test_tar_at_far_needs_one_over_far_impostors():
    genuine = np.linspace(0.1, 0.5, 10)
    # 1000 impostors: FAR 1e-3 allows exactly one (the closest, at 0.3)
    impostor = np.r_[0.3, np.linspace(1.0, 2.0, 999)]
    d, s = np.r_[genuine, impostor], np.r_[np.ones(10, bool), np.zeros(1000, bool)]
    r = tar_at_far(d, s, fars=[1e-3, 1e-4])[1e-3]
    assert r.reason is None and r.threshold == 0.5 and r.tar == 1.0 and r.far == 1e-3
    r = tar_at_far(d[:-1], s[:-1], fars=[1e-3])[1e-3]  # 999 impostors
    assert np.isnan(r.tar) and "999 < 1/FAR = 1000" in r.reason


def test_tar_at_far_repeated_far_values_do_not_crash():
    # gluon-face interpolated thresholds over a FAR axis with repeats and
    # crashed; here every FAR value repeats (all distances tied in blocks).
    d = np.r_[np.full(50, 0.4), np.full(50, 0.8), np.full(100, 1.2), np.full(100, 1.4)]
    s = np.r_[np.ones(100, bool), np.zeros(200, bool)]
    s[:10] = False  # 10 impostors tied with genuine pairs at 0.4
    r = tar_at_far(d, s, fars=(0.1, 0.01))
    # d <= 0.4 lets 10/210 impostors in (> 1%); d <= 0.8 as well (< 10%)
    assert r[0.1].tar == 1.0 and r[0.1].far == 10 / 210
    assert r[0.01].tar == 0.0 and r[0.01].far == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_tar_at_far_matches_loop(seed):
    dist, same = random_pairs(seed, 400, ties=bool(seed))
    far, tar, thr = loop_roc(dist, same)
    n_neg = int(np.sum(~same))
    for target, r in tar_at_far(dist, same, fars=(0.3, 0.1, 0.02, 0.005)).items():
        if n_neg * target < 1:
            assert r.reason is not None
            continue
        best = max(j for j in range(len(far)) if far[j] * n_neg <= target * n_neg + 1e-9)
        assert (r.tar, r.far, r.threshold) == (tar[best], far[best], thr[best])


def test_roc_needs_both_kinds_of_pairs():
    with pytest.raises(ValueError, match="genuine and impostor"):
        roc_curve([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        tar_at_far([0.1, 0.2], [True, False], fars=[0])


def test_report_combines_the_parts():
    dist, same = random_pairs(3, 300)
    rep = evaluate_verification(dist, same)
    acc = verification_accuracy(dist, same)
    assert rep.accuracy == acc.accuracy and rep.num_pairs == 300
    assert rep.num_same == int(same.sum())
    assert rep.auc == auc(dist, same) and rep.eer == eer(dist, same)
    assert_array_equal(rep.far, roc_curve(dist, same).far)
    assert np.isnan(rep.tar_at_far[1e-3].tar)  # ~150 impostors
    assert "pairs" in str(rep)


# --------------------------------------------------------------------------
# Embeddings: flip sum, normalisation, distance
# --------------------------------------------------------------------------

def test_pair_distances_by_hand():
    # (1,0) + flip (0,1) -> (1,1)/sqrt2 ; (1,0) + flip (1,0) -> (1,0):
    # squared distance (1/sqrt2 - 1)^2 + 1/2 = 2 - sqrt2.
    d = pair_distances([[1, 0], [3, 4]], [[1, 0], [-6, -8]],
                       flip1=[[0, 1], [0, 0]], flip2=[[1, 0], [0, 0]])
    assert_allclose(d, [2 - np.sqrt(2), 4.0], atol=1e-12)
    # without flips: scale does not matter, orthogonal -> 2
    assert_allclose(pair_distances([[2, 0], [5, 5]], [[0, 7], [1, 1]]), [2, 0], atol=1e-12)
    with pytest.raises(ValueError, match="both"):
        pair_distances([[1, 0]], [[1, 0]], flip1=[[1, 0]])


def linear_net(weight):
    net = mx.gluon.nn.Dense(weight.shape[0], use_bias=False, flatten=True)
    net.initialize()
    net(mx.nd.zeros((1, weight.shape[1])))
    net.weight.set_data(mx.nd.array(weight))
    return net


def numpy_protocol_distances(weight, images, flip=True):
    """Embed with x @ W.T, add the flipped image's embedding, normalise, compare."""
    flat = images.reshape(len(images), -1)
    emb = flat @ weight.T
    if flip:
        emb = emb + images[:, :, :, ::-1].reshape(len(images), -1) @ weight.T
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return np.sum((emb[0::2] - emb[1::2]) ** 2, axis=1)


def make_set(seed, num_pairs):
    rng = np.random.RandomState(seed)
    images = rng.uniform(-1, 1, size=(2 * num_pairs, 1, 2, 3)).astype(np.float32)
    issame = rng.rand(num_pairs) < 0.5
    issame[:2] = [True, False]
    return images, issame


WEIGHT = np.array([[1.0, 0.0, -0.5, 0.2, 0.0, 0.3],
                   [0.0, 1.0, 0.4, 0.0, -0.7, 0.1],
                   [0.3, 0.0, 0.0, 1.0, 0.5, -0.2]])


def test_flip_embedding_on_a_linear_model_by_hand():
    # one 1x1x3 pair: image (1,2,3) flips to (3,2,1); W = [[1,0,0],[0,0,1]]
    # -> (1,3) + (3,1) = (4,4); the other image (1,0,0) -> (1,0) + (0,1) = (1,1):
    # same direction, distance 0. Without flip: (1,3) vs (1,0): 2 - 2/sqrt(10).
    net = linear_net(np.array([[1.0, 0, 0], [0, 0, 1.0]]))
    images = np.array([[[[1, 2, 3]]], [[[1, 0, 0]]]] * 10, np.float32)
    issame = np.array([True, False] * 5)
    for flip, expected in [(True, 0.0), (False, 2 - 2 / np.sqrt(10))]:
        ev = VerificationEvaluator({"toy": (images, issame)}, flip=flip, progress=False)
        emb, flipped = ev.embed(net, images)
        d = pair_distances(emb[0::2], emb[1::2],
                           *(() if flipped is None else (flipped[0::2], flipped[1::2])))
        assert_allclose(d, np.full(10, expected), atol=1e-6)


@pytest.mark.parametrize("flip", [True, False])
def test_evaluator_matches_numpy_protocol(flip):
    images, issame = make_set(0, 40)
    net = linear_net(WEIGHT)
    ev = VerificationEvaluator({"a": (mx.nd.array(images), issame)}, batch_size=7,
                               flip=flip, progress=False)
    got = ev.evaluate(net)["a"]
    ref = numpy_protocol_distances(WEIGHT, images.astype(np.float64), flip)
    accs, thr = loop_kfold(ref, issame, 10, GRID)
    assert_allclose(got.fold_accuracies, accs)
    assert_allclose(got.auc, roc_auc_score(issame, -ref), atol=1e-6)


def test_sets_are_independent_and_calls_repeatable():
    a, b = make_set(1, 30), make_set(2, 50)
    Pairs = namedtuple("Pairs", ["images", "issame"])
    net = linear_net(WEIGHT)

    def run(sets):
        return VerificationEvaluator(sets, batch_size=16, progress=False).evaluate(net)

    alone = run({"A": a})["A"]
    first = run({"A": a, "B": Pairs(*b)})
    second = run({"B": Pairs(*b), "A": a})
    assert list(first) == ["A", "B"] and list(second) == ["B", "A"]
    for other in (first["A"], second["A"]):
        assert_array_equal(other.fold_accuracies, alone.fold_accuracies)
        assert_array_equal(other.far, alone.far)
        assert other.auc == alone.auc and other.eer == alone.eer
    assert_array_equal(first["B"].tar, second["B"].tar)
    ev = VerificationEvaluator({"A": a, "B": b}, progress=False)
    r1, r2 = ev.evaluate(net), ev.evaluate(net)
    for name in ("A", "B"):
        assert_array_equal(r1[name].tar, r2[name].tar)
        assert r1[name].accuracy == r2[name].accuracy


def test_evaluator_validates_sets():
    images, issame = make_set(0, 10)
    with pytest.raises(ValueError, match="2N"):
        VerificationEvaluator({"x": (images[:-1], issame)})
    with pytest.raises(ValueError, match="expected"):
        VerificationEvaluator({"x": images})


def test_results_table_and_plot():
    net = linear_net(WEIGHT)
    results = VerificationEvaluator({"A": make_set(1, 30), "B": make_set(2, 50)},
                                    progress=False).evaluate(net)
    rows = results_table(results, as_rows=True)
    assert rows[0][:3] == ["set", "pairs", "accuracy (%)"]
    assert [r[0] for r in rows[1:]] == ["A", "B"] and rows[2][1] == "50"
    assert rows[1][-1] == "n/a"  # TAR@FAR=1e-4 with ~15 impostor pairs
    text = results_table(results)
    assert "TAR@FAR=0.0001" in text and len(text.splitlines()) == 4
    import matplotlib
    matplotlib.use("Agg")
    ax = plot_roc(results)
    assert len(ax.get_lines()) == 2 and ax.get_xscale() == "log"
    import matplotlib.pyplot as plt
    plt.close(ax.figure)


# --------------------------------------------------------------------------
# Identification
# --------------------------------------------------------------------------

def unit(deg):
    rad = np.deg2rad(np.asarray(deg, float))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def test_rank_k_by_hand():
    # gallery: identities a..g at 0, 30, ..., 180 degrees on the circle
    gallery, g_lab = unit([0, 30, 60, 90, 120, 150, 180]), list("abcdefg")
    # probe a at 20 deg: b (10 deg off) beats a (20 off) -> rank 2
    # probe c at 60: rank 1; probe f at 150: rank 1
    # probe g at 100: d 10, e 20, c 40, f 50, b 70 all closer than g (80) -> rank 6
    probes, p_lab = unit([20, 60, 100, 150]), list("acgf")
    r = identification_rank_k(gallery, g_lab, probes, p_lab, ks=(1, 5, 6))
    assert_array_equal(r.ranks, [2, 1, 6, 1])
    assert r.rank_k == {1: 0.5, 5: 0.75, 6: 1.0}
    # a second gallery image of g at 95 deg is its best one: probe g -> rank 1
    r = identification_rank_k(np.r_[gallery, unit([95])], g_lab + ["g"], probes, p_lab)
    assert_array_equal(r.ranks, [2, 1, 1, 1])
    assert r.num_identities == 7 and r.num_probes == 4


def test_rank_ties_count_against_the_probe():
    # probe at 45 deg is as close to a (0) as to b (90): true identity b ranks 2nd
    r = identification_rank_k(unit([0, 90]), [0, 1], unit([45]), [1], ks=(1, 2))
    assert r.rank_k == {1: 0.0, 2: 1.0}


def test_rank_k_matches_loop():
    rng = np.random.RandomState(0)
    g_lab = rng.randint(0, 12, size=40)
    g_lab[:12] = np.arange(12)
    gallery, probes = rng.normal(size=(40, 6)), rng.normal(size=(25, 6))
    p_lab = rng.randint(0, 12, size=25)
    r = identification_rank_k(gallery, g_lab, probes, p_lab, ks=(1, 3), chunk_size=4)
    gn = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    for i in range(25):
        pn = probes[i] / np.linalg.norm(probes[i])
        best = {}
        for j in range(40):
            best[g_lab[j]] = max(best.get(g_lab[j], -2.0), float(gn[j] @ pn))
        rank = sum(1 for v in best.values() if v >= best[p_lab[i]])
        assert r.ranks[i] == rank
    assert r.rank_k[3] == np.mean(r.ranks <= 3)


def test_probe_identity_missing_from_gallery():
    gallery, probes = unit([0, 90]), unit([10, 80, 200])
    with pytest.raises(ValueError, match="absent from the gallery"):
        identification_rank_k(gallery, ["a", "b"], probes, ["a", "b", "z"])
    r = identification_rank_k(gallery, ["a", "b"], probes, ["a", "b", "z"], missing="exclude")
    assert r.num_excluded == 1 and r.num_probes == 2 and r.rank_k[1] == 1.0


def test_split_gallery_probe():
    labels = np.array([3, 3, 3, 7, 7, 9, 3, 7])
    gal, probe = split_gallery_probe(labels, num_gallery_per_id=1, seed=0)
    assert_array_equal(np.sort(np.r_[gal, probe]), np.arange(8))
    assert sorted(labels[gal].tolist()) == [3, 7, 9]  # one each; 9 has no probe
    assert sorted(labels[probe].tolist()) == [3, 3, 3, 7, 7]
    g2, p2 = split_gallery_probe(labels, num_gallery_per_id=2, seed=0)
    assert sorted(labels[g2].tolist()) == [3, 3, 7, 7, 9]
    again = split_gallery_probe(labels, num_gallery_per_id=1, seed=0)
    assert_array_equal(again[0], gal)
    draws = {tuple(split_gallery_probe(labels, seed=s)[0]) for s in range(20)}
    assert len(draws) > 1  # the seed changes the draw
    with pytest.raises(ValueError):
        split_gallery_probe(labels, num_gallery_per_id=0)
