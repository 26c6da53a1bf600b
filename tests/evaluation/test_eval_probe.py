import pytest
import torch

from stec.evaluation import cross_validate, fit_linear_probe, linear_probe, validation_split
from tests.evaluation.synthetic import make_blobs


def test_probe_separates_blobs(blobs):
    x, y = blobs
    result = linear_probe(x[:800], y[:800], x[800:], y[800:], epochs=60)
    assert result["accuracy"] > 0.97
    assert result["n_train"] + result["n_val"] == 800 and result["n_val"] == 80
    assert result["n_test"] == 200


def test_probe_is_at_chance_on_random_labels(blobs):
    x, _ = blobs
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 5, (1000,), generator=g)
    result = linear_probe(x[:800], y[:800], x[800:], y[800:], epochs=60)
    assert abs(result["accuracy"] - 0.2) < 0.08


def test_probe_is_deterministic_given_seed(blobs):
    x, y = blobs
    a = linear_probe(x[:300], y[:300], x[300:], y[300:], epochs=5, seed=3)
    b = linear_probe(x[:300], y[:300], x[300:], y[300:], epochs=5, seed=3)
    assert a == b


def test_early_stopping_restores_best_weights():
    # A weak signal among 64 noise features: validation improves, then the probe overfits.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 64, generator=g)
    y = ((x[:, 0] + 1.5 * torch.randn(300, generator=g)) > 0).long()
    kwargs = dict(epochs=300, lr=3e-3, batch_size=64, val_fraction=0.2, seed=0)
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


def test_multilabel_probe_reports_map():
    x, y = make_blobs(600, 6, 16, separation=4.0, seed=2)
    multi = torch.nn.functional.one_hot(y, 6).float()
    multi[:, 5] = (y % 2 == 0).float()  # an overlapping label
    result = linear_probe(x[:500], multi[:500], x[500:], multi[500:], multilabel=True, epochs=60)
    assert set(result) >= {"map", "val_map"} and "accuracy" not in result
    assert result["map"] > 0.95
    shuffled = multi[torch.randperm(600, generator=torch.Generator().manual_seed(0))]
    noise = linear_probe(
        x[:500], shuffled[:500], x[500:], shuffled[500:], multilabel=True, epochs=60
    )
    assert noise["map"] < 0.6


def test_probe_rejects_bad_labels(blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="multilabel=True"):
        linear_probe(x, y.float(), x, y)
    with pytest.raises(ValueError, match="feature sizes"):
        linear_probe(x, y, x[:, :3], y)


def test_cross_validate_reports_every_fold(blobs):
    x, y = blobs
    folds = torch.tensor([2, 5, 7]).repeat(334)[:1000]
    result = cross_validate(x, y, folds, epochs=20)
    assert set(result["per_fold"]) == {2, 5, 7} and result["n_folds"] == 3
    scores = torch.tensor(list(result["per_fold"].values()), dtype=torch.float64)
    assert result["accuracy_mean"] == pytest.approx(float(scores.mean()))
    assert result["accuracy_std"] == pytest.approx(float(scores.std(unbiased=False)))
    assert result["accuracy_mean"] > 0.95
    test = folds == 5
    alone = linear_probe(x[~test], y[~test], x[test], y[test], epochs=20)
    assert result["per_fold"][5] == alone["accuracy"]


def test_cross_validate_needs_two_folds(blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="two distinct folds"):
        cross_validate(x, y, torch.ones(1000, dtype=torch.long))
