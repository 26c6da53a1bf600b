"""The default probe against scikit-learn's logistic regression, on fixed real embeddings.

The fixture holds the embeddings of a randomly initialised AudioNTT2020 (d = 512) on the
built-in demo sound set, with its labels and 5 folds; ``make_probe_fixture.py`` beside
this file writes it.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from stec.evaluation import cross_validate

FIXTURE = Path(__file__).parent / "data" / "demo_random_audiontt.npz"


def _fixture() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = np.load(FIXTURE)
    return data["features"], data["labels"], data["folds"]


def test_the_fixture_is_the_demo_set_in_five_folds():
    x, y, folds = _fixture()
    assert x.shape == (400, 512) and x.dtype == np.float16 and np.isfinite(x).all()
    assert np.bincount(y).tolist() == [40] * 10
    assert sorted(set(folds.tolist())) == [1, 2, 3, 4, 5]
    assert all(np.bincount(y[folds == f]).tolist() == [8] * 10 for f in range(1, 6))


@pytest.mark.slow
def test_default_probe_scores_as_high_as_scikit_learn_logistic_regression():
    linear_model = pytest.importorskip("sklearn.linear_model")
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    x, y, folds = _fixture()
    ours = cross_validate(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(folds))
    reference = [
        _sklearn_accuracy(linear_model, preprocessing, x, y, folds, f) for f in range(1, 6)
    ]
    # measured: 0.815 for both (the EVAR probe: 0.755)
    assert ours["accuracy_mean"] >= float(np.mean(reference)) - 0.005


def _sklearn_accuracy(linear_model, preprocessing, x, y, folds, fold) -> float:
    """Standardise with the training folds, fit ``LogisticRegression(C=1)``, score ``fold``."""
    train, test = folds != fold, folds == fold
    scaler = preprocessing.StandardScaler().fit(x[train].astype(np.float64))
    model = linear_model.LogisticRegression(C=1.0, max_iter=10_000)
    model.fit(scaler.transform(x[train].astype(np.float64)), y[train])
    return float(model.score(scaler.transform(x[test].astype(np.float64)), y[test]))


@pytest.mark.usefixtures("isolated")
def test_the_fixture_script_embeds_as_stec_audio_does():
    # make_probe_fixture.py writes the fixture; on a smaller demo set its embeddings are
    # those of `stec-audio embed checkpoint=random` (the full set regenerates the committed
    # file: 400 x 512, within one float16 step)
    from stec_audio.cli import main
    from tests.evaluation.make_probe_fixture import demo_embeddings

    small = ["data.n_per_class=2"]
    features, labels, folds = demo_embeddings(0, small)
    assert features.shape == (20, 512) and np.bincount(labels).tolist() == [2] * 10
    assert set(folds.tolist()) <= {1, 2, 3, 4, 5} and len(folds) == 20
    args = ["embed", "data=demo", *small, "checkpoint=random", "seed=0", "out=cli.npy"]
    assert main([*args, "trainer.progress=false"]) == 0
    cli = np.load("cli.npy", allow_pickle=True).item()
    np.testing.assert_allclose(features, cli["embeddings"], rtol=0, atol=1e-6)
    assert np.array_equal(labels, cli["labels"])
