import pytest
import torch
import torch.nn.functional as F

from stec.evaluation import (
    DEFAULT_CS,
    cross_validate,
    fit_linear_probe,
    linear_probe,
    probe_options,
    validation_split,
)
from stec.evaluation.logreg import (
    fit_logistic,
    inner_fold_ids,
    logistic_objective,
    logistic_score_gradient,
    row_space,
    select_c,
)
from tests.evaluation.synthetic import make_blobs

EVAR = {"protocol": "evar"}


def _standardised(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(0)) / x.std(0, unbiased=False)


# --- the default probe: L2 logistic regression, L-BFGS, C by inner cross-validation ---


def test_probe_separates_blobs(blobs):
    x, y = blobs
    result = linear_probe(x[:800], y[:800], x[800:], y[800:])
    assert result["accuracy"] > 0.97 and result["val_accuracy"] > 0.97
    assert result["protocol"] == "logreg" and result["C"] in DEFAULT_CS
    assert result["n_train"] == 800 and result["n_test"] == 200 and result["iterations"] >= 0


def test_probe_is_at_chance_on_random_labels(blobs):
    x, _ = blobs
    y = torch.randint(0, 5, (1000,), generator=torch.Generator().manual_seed(1))
    result = linear_probe(x[:800], y[:800], x[800:], y[800:])
    assert abs(result["accuracy"] - 0.2) < 0.08


def test_probe_is_deterministic_given_seed(blobs):
    x, y = blobs
    a = fit_linear_probe(x[:300], y[:300], seed=3)
    b = fit_linear_probe(x[:300], y[:300], seed=3)
    assert torch.equal(a.layer.weight, b.layer.weight) and a.c_scores == b.c_scores


def _stacked_problems():
    """Two problems over 6 rows and 3 classes; problem ``j`` trains on ``train[j]``."""
    g = torch.Generator().manual_seed(0)
    scores, weight = torch.randn(2, 3, 6, generator=g), torch.randn(2, 3, 4, generator=g)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    train = torch.tensor([[1, 1, 0, 1, 1, 0], [0, 1, 1, 1, 0, 1]], dtype=torch.float)
    return scores, weight, y, train / train.sum(1, keepdim=True), torch.tensor([0.5, 2.0])


def test_objective_is_the_sum_of_the_penalised_problems():
    scores, weight, y, row_weight, penalty = _stacked_problems()
    rows = [row_weight[j] > 0 for j in range(2)]
    expected = sum(
        F.cross_entropy(scores[j][:, rows[j]].T, y[rows[j]])
        + 0.5 * penalty[j] * weight[j].square().sum()
        for j in range(2)
    )
    got = logistic_objective(scores, y, weight, row_weight, penalty, multilabel=False)
    torch.testing.assert_close(got, expected)
    multi = F.one_hot(y, 3).float()
    expected_bce = sum(
        F.binary_cross_entropy_with_logits(scores[j][:, rows[j]].T, multi[rows[j]])
        * 3  # summed over the 3 classes, averaged over rows
        + 0.5 * penalty[j] * weight[j].square().sum()
        for j in range(2)
    )
    got_bce = logistic_objective(scores, multi, weight, row_weight, penalty, multilabel=True)
    torch.testing.assert_close(got_bce, expected_bce)


@pytest.mark.parametrize("multilabel", [False, True])
def test_closed_form_gradient_is_the_autograd_one(multilabel):
    scores, weight, y, row_weight, penalty = _stacked_problems()
    labels = F.one_hot(y, 3).float() if multilabel else y
    scores.requires_grad_(True)
    logistic_objective(scores, labels, weight, row_weight, penalty, multilabel).backward()
    got = logistic_score_gradient(scores.detach(), labels, row_weight, multilabel)
    torch.testing.assert_close(got, scores.grad)


def test_fixed_c_fits_what_scikit_learn_fits():
    linear_model = pytest.importorskip("sklearn.linear_model")
    x, y = make_blobs(300, 4, 12, separation=1.0, seed=4)
    probe = fit_linear_probe(x, y, cs=[0.5], tol=1e-7)
    assert probe.c == 0.5 and probe.c_scores == {}  # one candidate: no inner CV
    xs = _standardised(x).double().numpy()
    reference = linear_model.LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(xs, y)
    ours = probe.scores(x).softmax(1).double()
    torch.testing.assert_close(
        ours, torch.from_numpy(reference.predict_proba(xs)), atol=1e-3, rtol=0
    )


def test_fixed_c_multilabel_fits_scikit_learn_one_vs_rest():
    linear_model = pytest.importorskip("sklearn.linear_model")
    x, y = make_blobs(300, 4, 12, separation=1.0, seed=5)
    multi = F.one_hot(y, 4).float()
    multi[:, 3] = ((y == 1) | (x[:, 0] > 0)).float()  # an overlapping label
    probe = fit_linear_probe(x, multi, multilabel=True, cs=[2.0], tol=1e-7)
    xs = _standardised(x).double().numpy()
    for c in range(4):
        reference = linear_model.LogisticRegression(C=2.0, tol=1e-10, max_iter=10_000)
        reference.fit(xs, multi[:, c].numpy())
        ours = probe.scores(x)[:, c].sigmoid().double()
        expected = torch.from_numpy(reference.predict_proba(xs)[:, 1])
        torch.testing.assert_close(ours, expected, atol=1e-3, rtol=0)


def test_fits_in_the_row_space_are_the_fits_in_the_full_space():
    # fewer samples than dimensions: the probe fits in the r <= N coordinates of the rows
    x, y = make_blobs(30, 3, 80, separation=1.0, seed=6)
    x = _standardised(x)
    z, basis = row_space(x)
    assert z.shape == (30, 29) and basis.shape == (29, 80)  # centred rows: rank N - 1
    torch.testing.assert_close(z @ basis, x, atol=1e-4, rtol=0)
    torch.testing.assert_close(basis @ basis.T, torch.eye(29), atol=1e-5, rtol=0)
    row_weight, penalty = torch.full((1, 30), 1 / 30), torch.tensor([0.1])
    full = fit_logistic(x, y, row_weight, penalty, 3, multilabel=False, tol=1e-7)
    reduced = fit_logistic(z, y, row_weight, penalty, 3, multilabel=False, tol=1e-7)
    torch.testing.assert_close(reduced.weight[0] @ basis, full.weight[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(reduced.bias, full.bias, atol=1e-4, rtol=0)
    # the probe (two candidates: it fits in the row space) ends at the full-space optimum
    probe = fit_linear_probe(x, y, cs=[0.1, 1 / (0.1 * 30)], tol=1e-7)
    full = fit_logistic(x, y, row_weight, torch.tensor([1 / (probe.c * 30)]), 3,
                        multilabel=False, tol=1e-7)  # fmt: skip
    torch.testing.assert_close(probe.layer.weight, full.weight[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("protocol", ["logreg", "evar"])
def test_a_feature_constant_in_training_is_centred_not_scaled_as_scikit_learn_does(protocol):
    # a stand-in std of 1e-6 multiplied its test-time values by a million: 0.51 vs 0.855
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    linear_model = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (400,), generator=g)
    x = torch.cat(
        [y[:, None] * 1.5 + torch.randn(400, 2, generator=g), torch.full((400, 1), 0.1)], 1
    )
    x[200:, 2] += torch.randn(200, generator=g)  # constant in the training half only
    train, test = slice(0, 200), slice(200, None)
    scaler = preprocessing.StandardScaler().fit(x[train].double().numpy())
    assert scaler.scale_[2] == 1.0
    reference = linear_model.LogisticRegression(C=1.0, max_iter=10_000)
    reference.fit(scaler.transform(x[train].numpy()), y[train].numpy())
    expected = reference.score(scaler.transform(x[test].numpy()), y[test].numpy())
    options = {"cs": [1.0]} if protocol == "logreg" else {"epochs": 50}
    probe = fit_linear_probe(x[train], y[train], protocol=protocol, **options)
    torch.testing.assert_close(probe.std, torch.from_numpy(scaler.scale_).float())
    assert probe.evaluate(x[test], y[test]) >= expected - 0.05 and expected > 0.8


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_c_is_chosen_by_inner_cross_validation(seed):
    # 40 samples, 60 noise dimensions and one weak signal: a noisy inner-CV curve
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(120, 60, generator=g)
    y = (x[:, 0] + torch.randn(120, generator=g) > 0).long()
    cs = [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    probe = fit_linear_probe(x[:40], y[:40], cs=cs)
    assert list(probe.c_scores) == cs
    # the chosen C has the best held-out metric averaged with its neighbours' in the sorted
    # candidates (ties: the lower held-out loss), not the best raw metric
    metrics = [probe.c_scores[c]["metric"] for c in cs]
    smoothed = [sum(metrics[max(0, i - 1) : i + 2]) / len(metrics[max(0, i - 1) : i + 2])
                for i in range(len(cs))]  # fmt: skip
    best = max(range(len(cs)), key=lambda i: (smoothed[i], -probe.c_scores[cs[i]]["loss"]))
    assert probe.c == cs[best]
    assert probe.val_metric == probe.c_scores[probe.c]["metric"]  # the raw score at that C
    # the chosen C is what select_c finds on the same folds
    folds = inner_fold_ids(y[:40], 5, torch.Generator().manual_seed(0))
    selection = select_c(_standardised(x[:40]), y[:40], folds, cs, 2, multilabel=False)
    assert selection.c == probe.c


def test_inner_folds_are_stratified():
    y = torch.arange(4).repeat_interleave(10)
    ids = inner_fold_ids(y, 5, torch.Generator().manual_seed(0))
    for fold in range(5):
        assert torch.equal(y[ids == fold].bincount(minlength=4), torch.full((4,), 2))
    with pytest.raises(ValueError, match="inner_folds"):
        inner_fold_ids(y, 1, torch.Generator())


def test_a_class_missing_from_training_is_never_predicted(blobs):
    x, y = blobs
    train = y != 4
    result = linear_probe(x[train], y[train], x, y)
    probe = fit_linear_probe(x[train], y[train], n_classes=5)
    assert (probe.scores(x).argmax(1) != 4).all()
    assert result["accuracy"] == pytest.approx(float((y != 4).float().mean()), abs=0.02)


def test_multilabel_probe_reports_map():
    x, y = make_blobs(600, 6, 16, separation=4.0, seed=2)
    multi = F.one_hot(y, 6).float()
    multi[:, 5] = (y % 2 == 0).float()  # an overlapping label
    result = linear_probe(x[:500], multi[:500], x[500:], multi[500:], multilabel=True)
    assert set(result) >= {"map", "val_map", "C"} and "accuracy" not in result
    assert result["map"] > 0.95
    shuffled = multi[torch.randperm(600, generator=torch.Generator().manual_seed(0))]
    noise = linear_probe(x[:500], shuffled[:500], x[500:], shuffled[500:], multilabel=True)
    assert noise["map"] < 0.6


# --- the EVAR protocol: Adam, mini-batches, early stopping ---


def test_evar_probe_separates_blobs(blobs):
    x, y = blobs
    result = linear_probe(x[:800], y[:800], x[800:], y[800:], epochs=60, **EVAR)
    assert result["accuracy"] > 0.97 and result["protocol"] == "evar"
    assert result["n_train"] + result["n_val"] == 800 and result["n_val"] == 80
    assert result["n_test"] == 200


def test_evar_probe_is_deterministic_given_seed(blobs):
    x, y = blobs
    a = linear_probe(x[:300], y[:300], x[300:], y[300:], epochs=5, seed=3, **EVAR)
    b = linear_probe(x[:300], y[:300], x[300:], y[300:], epochs=5, seed=3, **EVAR)
    assert a == b


def test_early_stopping_restores_best_weights():
    # A weak signal among 64 noise features: validation improves, then the probe overfits.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 64, generator=g)
    y = ((x[:, 0] + 1.5 * torch.randn(300, generator=g)) > 0).long()
    kwargs = dict(epochs=300, lr=3e-3, batch_size=64, val_fraction=0.2, seed=0, **EVAR)
    probe = fit_linear_probe(x, y, patience=10, **kwargs)
    curve = [h["val_metric"] for h in probe.history]
    epochs_run = len(probe.history)
    assert 0 < probe.best_epoch < epochs_run - 1
    assert epochs_run == probe.best_epoch + 11  # stopped `patience` epochs after the best
    assert curve[probe.best_epoch] == max(curve) > curve[-1]
    val_x, val_y = x[probe.val_index], y[probe.val_index]
    assert probe.evaluate(val_x, val_y) == pytest.approx(max(curve))
    # The kept weights are those of the best epoch, not of the last one.
    replay = fit_linear_probe(
        x, y, patience=1000, restore_best=False, **{**kwargs, "epochs": probe.best_epoch + 1}
    )
    assert torch.equal(replay.layer.weight, probe.layer.weight)
    last = fit_linear_probe(x, y, patience=10, restore_best=False, **kwargs)
    assert len(last.history) == epochs_run
    assert not torch.equal(last.layer.weight, probe.layer.weight)
    assert last.evaluate(val_x, val_y) == pytest.approx(curve[-1])


def test_validation_split_is_stratified():
    y = torch.arange(10).repeat_interleave(20)
    train, val = validation_split(y, 0.1, torch.Generator().manual_seed(0))
    assert val.numel() == 20 and train.numel() == 180
    assert torch.equal(y[val].bincount(minlength=10), torch.full((10,), 2))
    assert set(train.tolist()).isdisjoint(val.tolist())


def test_evar_multilabel_probe_reports_map():
    x, y = make_blobs(600, 6, 16, separation=4.0, seed=2)
    multi = F.one_hot(y, 6).float()
    result = linear_probe(
        x[:500], multi[:500], x[500:], multi[500:], multilabel=True, epochs=60, **EVAR
    )
    assert result["map"] > 0.95 and "val_map" in result


# --- options, errors, cross-validation ---


def test_probe_rejects_bad_labels_and_options(blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="multilabel=True"):
        linear_probe(x, y.float(), x, y)
    with pytest.raises(ValueError, match="feature sizes"):
        linear_probe(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="allowed values: logreg, evar"):
        fit_linear_probe(x, y, protocol="sgd")
    with pytest.raises(ValueError, match=r"logreg probe has no option\(s\) \['epochs'\]"):
        fit_linear_probe(x, y, epochs=10)
    with pytest.raises(ValueError, match="positive numbers"):
        fit_linear_probe(x, y, cs=[0.0, 1.0])


def test_probe_options_reads_the_evaluate_section():
    section = {"protocol": "logreg", "cs": [0.1, 1], "inner_folds": 3, "epochs": 200,
               "lr": 0.001, "knn_k": 20, "embed_batch_size": 16, "device": "auto"}  # fmt: skip
    options = probe_options(section, seed=7)
    assert options == {"protocol": "logreg", "cs": [0.1, 1.0], "inner_folds": 3, "seed": 7,
                       "device": torch.device("cpu")}  # fmt: skip
    evar = probe_options({**section, "protocol": "evar", "batch_size": 64}, seed=1)
    assert evar == {"protocol": "evar", "epochs": 200, "lr": 0.001, "batch_size": 64,
                    "seed": 1, "device": torch.device("cpu")}  # fmt: skip
    assert probe_options({})["protocol"] == "logreg"
    with pytest.raises(ValueError, match=r"evaluate.protocol='adam' is not valid; allowed"):
        probe_options({"protocol": "adam"})
    with pytest.raises(ValueError, match="evaluate.cs must be a list of positive numbers"):
        probe_options({"cs": ["a"]})


def test_cross_validate_reports_every_fold(blobs):
    x, y = blobs
    folds = torch.tensor([2, 5, 7]).repeat(334)[:1000]
    result = cross_validate(x, y, folds)
    assert set(result["per_fold"]) == {2, 5, 7} and result["n_folds"] == 3
    assert result["protocol"] == "logreg"
    scores = torch.tensor(list(result["per_fold"].values()), dtype=torch.float64)
    assert result["accuracy_mean"] == pytest.approx(float(scores.mean()))
    assert result["accuracy_std"] == pytest.approx(float(scores.std(unbiased=False)))
    assert result["accuracy_mean"] > 0.95
    # C is chosen by leaving out each of the other folds in turn
    test = folds == 5
    alone = linear_probe(x[~test], y[~test], x[test], y[test], groups=folds[~test])
    assert result["per_fold"][5] == alone["accuracy"]
    evar = cross_validate(x, y, folds, epochs=20, **EVAR)
    assert evar["protocol"] == "evar"
    alone = linear_probe(x[~test], y[~test], x[test], y[test], epochs=20, **EVAR)
    assert evar["per_fold"][5] == alone["accuracy"]


def test_cross_validate_needs_two_folds(blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="two distinct folds"):
        cross_validate(x, y, torch.ones(1000, dtype=torch.long))
