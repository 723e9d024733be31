"""ROC/AUC/EER/TAR@FAR against scikit-learn; thresholds and 10-fold against brute force."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from convjax.face import metrics, thresholds
from convjax.runs.images import save_figure


def pair_data(seed, n=400, ties=False):
    """Distances of same pairs ~ smaller than different pairs, with overlap."""
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.4
    d = np.where(same, rng.normal(0.8, 0.35, n), rng.normal(1.5, 0.35, n)).clip(0, 4)
    if ties:
        d = np.round(d, 1)  # many tied distances
    return d.astype(np.float32), same.astype(np.int32)


@pytest.mark.parametrize("ties", [False, True])
def test_roc_and_auc_match_sklearn(ties):
    d, same = pair_data(0, ties=ties)
    fpr, tpr, thr = metrics.roc_curve(-d, same)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(same, -d, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
    np.testing.assert_allclose(thr[1:], sk_thr[1:], rtol=1e-6)
    want = roc_auc_score(same, -d)
    np.testing.assert_allclose(metrics.auc(fpr, tpr), want, rtol=1e-9)
    np.testing.assert_allclose(metrics.roc_auc(-d, same), want, rtol=1e-5)


def test_eer_matches_interpolated_crossing():
    d, same = pair_data(1)
    sk_fpr, sk_tpr, _ = sk_roc_curve(same, -d, drop_intermediate=False)
    want = brentq(lambda x: 1.0 - x - interp1d(sk_fpr, sk_tpr)(x), 0.0, 1.0)
    fpr, tpr, _ = metrics.roc_curve(-d, same)
    np.testing.assert_allclose(metrics.equal_error_rate(fpr, tpr), want, atol=1e-6)


@pytest.mark.parametrize("far", [0.0, 0.01, 0.1, 0.5])
def test_tar_at_far_matches_counting(far):
    d, same = pair_data(2)
    fpr, tpr, _ = metrics.roc_curve(-d, same)
    best = 0.0
    for t in np.unique(d):  # accept d <= t
        accept = d <= t
        if accept[same == 0].mean() <= far:
            best = max(best, accept[same == 1].mean())
    np.testing.assert_allclose(metrics.tar_at_far(fpr, tpr, far), best, atol=1e-12)


def brute_force_best_accuracy(d, same, train):
    """Midpoints between consecutive distinct training distances, smallest first."""
    values = np.unique(d[train].astype(np.float64))
    candidates = np.r_[values[0] - 1.0, (values[:-1] + values[1:]) / 2.0, values[-1] + 1.0]
    best_t, best_acc = None, -1.0
    for t in candidates:
        acc = np.mean((d[train] <= t) == same[train])
        if acc > best_acc:
            best_t, best_acc = t, acc
    return best_t, best_acc


@pytest.mark.parametrize("ties", [False, True])
def test_accuracy_threshold_matches_brute_force(ties):
    d, same = pair_data(3, n=300, ties=ties)
    t, acc = thresholds.accuracy_threshold(d, same)
    want_t, want_acc = brute_force_best_accuracy(d, same, np.ones(d.size, bool))
    np.testing.assert_allclose(acc, want_acc, rtol=1e-6)
    np.testing.assert_allclose(t, want_t, rtol=1e-6)
    chosen = thresholds.choose_threshold(d, same)
    np.testing.assert_allclose(chosen.accuracy, want_acc, rtol=1e-6)


@pytest.mark.parametrize("target", [0.0, 0.01, 0.1])
def test_far_threshold_is_the_loosest_within_target(target):
    d, same = pair_data(4, n=500, ties=True)
    chosen = thresholds.choose_threshold(d, same, criterion="far", target_far=target)
    assert chosen.far <= target
    best_tar = max(
        [0.0]
        + [(d[same == 1] <= t).mean() for t in np.unique(d) if (d[same == 0] <= t).mean() <= target]
    )
    np.testing.assert_allclose(chosen.tar, best_tar, atol=1e-12)


def test_ten_fold_matches_loop_reference():
    d, same = pair_data(5, n=600)
    got = thresholds.kfold_accuracy(d, same, num_folds=10)
    fold_of = np.arange(d.size) * 10 // d.size
    want = []
    for k in range(10):
        t, _ = brute_force_best_accuracy(d, same, fold_of != k)
        held = fold_of == k
        want.append(np.mean((d[held] <= t) == same[held]))
    np.testing.assert_allclose(got["fold_accuracies"], want, atol=1e-9)
    np.testing.assert_allclose(got["mean"], np.mean(want), atol=1e-9)
    np.testing.assert_allclose(got["std"], np.std(want), atol=1e-9)


def test_threshold_round_trips_through_json():
    d, same = pair_data(6)
    chosen = thresholds.choose_threshold(d, same, criterion="far", target_far=0.05)
    record = json.loads(json.dumps(chosen.to_dict()))
    assert thresholds.VerificationThreshold.from_dict(record) == chosen
    np.testing.assert_array_equal(chosen.accepts(d), d <= chosen.threshold)
    with pytest.raises(ValueError, match="needs the fields threshold, criterion"):
        thresholds.VerificationThreshold.from_dict({"threshold": 0.5})


def test_roc_figure_is_a_real_png(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    d, same = pair_data(7)
    fpr, tpr, _ = metrics.roc_curve(-d, same)
    figure = metrics.roc_figure({"model": (fpr, tpr)})
    assert matplotlib.get_backend() == backend  # no backend switch
    assert [len(ax.lines) for ax in figure.axes] == [2, 1]  # curve + chance line, curve
    path = save_figure(figure, tmp_path / "roc.png")
    image = np.asarray(Image.open(path).convert("L"))
    assert image.shape == (450, 900)  # linear and log-FAR panels
    assert image.std() > 10  # not a blank canvas


def test_report_and_bad_input():
    d, same = pair_data(8)
    report = metrics.verification_report(d, same)
    np.testing.assert_allclose(report["auc"], roc_auc_score(same, -d), rtol=1e-9)
    with pytest.raises(ValueError, match="both same"):
        metrics.roc_curve(d, np.ones_like(same))
    with pytest.raises(ValueError, match=r"\[N\]"):
        metrics.roc_curve(d, same[:5])
    with pytest.raises(ValueError, match="accuracy, far"):
        thresholds.choose_threshold(d, same, criterion="eer")
