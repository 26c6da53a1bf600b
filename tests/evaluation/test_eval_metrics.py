import itertools

import pytest
import torch

from stec.evaluation import (
    average_precision_per_class,
    class_distance_ratio,
    knn_accuracy,
    mean_average_precision,
)
from tests.evaluation.synthetic import make_blobs


def test_map_matches_hand_computed_value():
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.8, 0.4, 0.2], [0.7, 0.35, 0.1], [0.6, 0.8, 0.5]])
    targets = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]]).float()
    # class 0: hits at ranks 1 and 3 -> (1 + 2/3) / 2; class 1: ranks 1 and 4 -> (1 + 2/4) / 2;
    # class 2 has no positive and is skipped.
    ap = average_precision_per_class(scores, targets)
    assert ap[0] == pytest.approx(5 / 6) and ap[1] == pytest.approx(0.75)
    assert torch.isnan(ap[2])
    assert mean_average_precision(scores, targets) == pytest.approx((5 / 6 + 0.75) / 2)


def test_map_handles_ties_independently_of_order():
    # Scores 0.5, 0.5 tie: at that threshold P = 1/2, R = 1/2; at 0.2: P = 2/3, R = 1.
    expected = 0.5 * 0.5 + 0.5 * (2 / 3)
    for order in itertools.permutations(range(3)):
        idx = torch.tensor(order)
        scores = torch.tensor([[0.5], [0.5], [0.2]])[idx]
        targets = torch.tensor([[1.0], [0.0], [1.0]])[idx]
        assert mean_average_precision(scores, targets) == pytest.approx(expected)


def test_map_agrees_with_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    scores = (
        torch.randint(0, 6, (300, 8), generator=g).float() + torch.rand(300, 8, generator=g).round()
    )
    targets = (torch.rand(300, 8, generator=g) < 0.2).float()
    ours = average_precision_per_class(scores, targets)
    for c in range(8):
        ref = metrics.average_precision_score(targets[:, c].numpy(), scores[:, c].numpy())
        assert float(ours[c]) == pytest.approx(ref, abs=1e-6)


def test_knn_on_blobs_and_random_labels(blobs):
    x, y = blobs
    assert knn_accuracy(x[:800], y[:800], x[800:], y[800:], k=20) > 0.97
    random_y = torch.randint(0, 5, (1000,), generator=torch.Generator().manual_seed(0))
    assert knn_accuracy(x[:800], random_y[:800], x[800:], random_y[800:]) < 0.35
    # Chunking does not change the answer.
    a = knn_accuracy(x[:800], random_y[:800], x[800:], random_y[800:], chunk_size=7)
    assert a == knn_accuracy(x[:800], random_y[:800], x[800:], random_y[800:])


def test_knn_weights_votes_by_similarity():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.05]])
    # Two neighbours of class 1 are outvoted by one much closer neighbour of class 0.
    assert knn_accuracy(train, labels, query, torch.tensor([0]), k=3, temperature=0.07) == 1.0
    assert knn_accuracy(train, labels, query, torch.tensor([1]), k=3, temperature=100.0) == 1.0


def test_distance_ratio_lower_for_clustered_labels(blobs):
    x, y = blobs
    clustered = class_distance_ratio(x, y)
    shuffled = class_distance_ratio(
        x, y[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    )
    assert clustered["ratio"] < 0.5 * shuffled["ratio"]
    assert shuffled["ratio"] == pytest.approx(1.0, abs=0.05)
    assert clustered["n_classes"] == 5


def test_distance_ratio_matches_brute_force():
    x, y = make_blobs(40, 3, 5, separation=1.0, seed=4)
    u = torch.nn.functional.normalize(x.double(), dim=1)
    dist = 1 - u @ u.T
    within = []
    for c in range(3):
        m = y == c
        d = dist[m][:, m]
        n = int(m.sum())
        within.append(d.sum() / (n * (n - 1)))  # diagonal is zero
    between = [dist[y == j][:, y == k].mean() for j in range(3) for k in range(3) if j != k]
    result = class_distance_ratio(x, y)
    assert result["within"] == pytest.approx(float(torch.stack(within).mean()))
    assert result["between"] == pytest.approx(float(torch.stack(between).mean()))


def test_distance_ratio_rejects_single_class():
    with pytest.raises(ValueError, match="two classes"):
        class_distance_ratio(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))


def test_the_distance_ratio_is_none_where_it_is_not_defined():
    from stec.evaluation import distance_ratio_where_defined

    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    assert distance_ratio_where_defined(x, torch.zeros(6, dtype=torch.long)) is None
    assert distance_ratio_where_defined(x, torch.arange(6)) is None  # no class of two
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert distance_ratio_where_defined(x, labels) == class_distance_ratio(x, labels)["ratio"]
