import math

import pytest
import torch

from stec import ActionSpace, Affine, Binary, Categorical, Continuous, relative_affine
from stec.actions import bin_values, invert_affine


def random_crops_and_flips(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = 0.2 + 0.8 * torch.rand(n, 2, generator=gen)
    shift = (1 - scale) * (2 * torch.rand(n, 2, generator=gen) - 1)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 3, 3)
    theta[:, 0, 0] = scale[:, 0] * flip
    theta[:, 1, 1] = scale[:, 1]
    theta[:, :2, 2] = shift
    theta[:, 2, 2] = 1
    return theta


def test_relative_affine_composes_exactly_with_flips():
    theta_a, theta_b = random_crops_and_flips(256, 0), random_crops_and_flips(256, 1)
    rel = relative_affine(theta_a, theta_b)
    assert torch.allclose(rel @ theta_a, theta_b, atol=1e-5)
    assert torch.allclose(
        relative_affine(theta_a, theta_a), torch.eye(3).expand(256, 3, 3), atol=1e-5
    )
    # the translation of the relative map is -A_b A_a^-1 t_a + t_b, not a negated translation
    a_inv = torch.linalg.inv(theta_a[:, :2, :2])
    expected_t = theta_b[:, :2, 2] - (theta_b[:, :2, :2] @ a_inv @ theta_a[:, :2, 2:]).squeeze(-1)
    assert torch.allclose(rel[:, :2, 2], expected_t, atol=1e-5)


def test_affine_component_identity_targets_and_bins():
    comp = Affine("crop")
    theta = random_crops_and_flips(8)
    action = comp.relative(theta, theta)
    # axis-aligned maps: only scale_x, shift_x, scale_y, shift_y are targets
    assert comp.n_targets == 4
    assert comp.target_labels == ["crop.scale_x", "crop.shift_x", "crop.scale_y", "crop.shift_y"]
    assert torch.allclose(action, torch.tensor([1.0, 0, 1, 0]).expand(8, 4), atol=1e-6)
    # identity: linear 1 falls in bin floor((1+2)/4*6)=4, translation 0 in bin 3
    assert comp.classes(action)[0].tolist() == [4, 3, 4, 3]
    general = Affine("warp", axis_aligned=False)
    assert general.n_targets == 6
    full = general.relative(theta, theta)
    assert torch.allclose(full, torch.tensor([1.0, 0, 0, 0, 1, 0]).expand(8, 6), atol=1e-6)
    assert general.classes(full)[0].tolist() == [4, 3, 3, 3, 4, 3]


def test_affine_axes_bin_in_their_own_units_and_predict_only_the_targets_asked_for():
    # time in crop lengths on x, frequency in semitones on y
    comp = Affine("tf", linear_range=((0.5, 2.0), (0.8, 1.25)),
                  translation_range=((-1.0, 1.0), (-24.0, 24.0)))  # fmt: skip
    eye = torch.eye(3).expand(3, 3, 3)
    moved = eye.clone()
    moved[:, 0, 2] = torch.tensor([-0.9, 0.1, 0.9])  # crop lengths
    moved[:, 1, 2] = torch.tensor([-20.0, 1.0, 20.0])  # semitones
    classes = comp.classes(comp.relative(eye, moved))
    assert classes[:, 1].tolist() == [0, 3, 5] and classes[:, 3].tolist() == [0, 3, 5]
    assert comp.ranges == [(0.5, 2.0), (-1.0, 1.0), (0.8, 1.25), (-24.0, 24.0)]
    shifts = Affine("tf", translation_range=((-1.0, 1.0), (-24.0, 24.0)),
                    targets=["shift_x", "shift_y"])  # fmt: skip
    assert shifts.target_labels == ["tf.shift_x", "tf.shift_y"] and shifts.n_targets == 2
    assert shifts.classes(shifts.relative(eye, moved)).tolist() == [[0, 0], [3, 3], [5, 5]]
    with pytest.raises(ValueError, match=r"targets \['shear_xy'\] must be a non-empty subset"):
        Affine("tf", targets=["shear_xy"])
    with pytest.raises(ValueError, match=r"translation_range \(y\)"):
        Affine("tf", translation_range=((-1.0, 1.0), (2.0, 1.0)))


def test_affine_records_state_their_direction():
    comp = Affine("crop")
    theta = random_crops_and_flips(8)
    forward = comp.record(source_to_view=theta)
    backward = comp.record(view_to_source=invert_affine(theta))
    assert torch.allclose(forward["crop"], backward["crop"], atol=1e-5)
    assert forward["crop.source_to_view"].all()
    space = ActionSpace([comp])
    with pytest.raises(ValueError, match="exactly one"):
        comp.record()
    with pytest.raises(ValueError, match="exactly one"):
        comp.record(source_to_view=theta, view_to_source=theta)
    # a bare matrix never stated its direction: refused rather than read either way
    with pytest.raises(ValueError, match="direction is unknown"):
        space.targets({"crop": theta}, forward)
    rotation = torch.eye(3).repeat(2, 1, 1)
    rotation[:, 0, 1], rotation[:, 1, 0] = 0.6, -0.6
    with pytest.raises(ValueError, match="axis_aligned=False"):
        comp.record(source_to_view=rotation)
    assert Affine("warp", axis_aligned=False).record(source_to_view=rotation)["warp"] is rotation


def test_component_weights_do_not_depend_on_target_counts():
    space = ActionSpace([Affine("crop"), Continuous("gain", -1, 1, dim=2), Binary("flip")])
    weights = space.target_weights()
    assert space.n_targets == 7
    # each component sums to a third, whatever its number of targets
    for sl in space.slices.values():
        assert math.isclose(float(weights[sl].sum()), 1 / 3, rel_tol=1e-6)
    custom = space.target_weights({"crop": 2.0, "flip": 0.0})
    assert math.isclose(float(custom[space.slices["crop"]].sum()), 2 / 3, rel_tol=1e-6)
    assert float(custom[space.slices["flip"]].sum()) == 0.0
    with pytest.raises(ValueError, match="unknown component"):
        space.target_weights({"crop2": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        space.target_weights({"crop": -1.0})


def test_continuous_relations_are_exact():
    p_a, p_b = torch.tensor([[0.5], [2.0]]), torch.tensor([[1.5], [1.0]])
    assert torch.allclose(Continuous("t", -2, 2).relative(p_a, p_b), torch.tensor([[1.0], [-1.0]]))
    lr = Continuous("s", -1, 1, relation="log_ratio").relative(p_a, p_b)
    assert torch.allclose(lr, torch.log(torch.tensor([[3.0], [0.5]])))
    assert Continuous("m", 0, 1, relation="pair", dim=2).n_targets == 4
    same = torch.rand(5, 1)
    assert torch.equal(Continuous("t", -1, 1).relative(same, same), torch.zeros(5, 1))


def test_binning_edges_and_clamping():
    values = torch.tensor([-5.0, 0.0, 0.99, 1.0, 2.5, 5.99, 6.0, 9.0, 3.0 - 1e-8])
    bins = bin_values(values, 0.0, 6.0, 6)
    # edges belong to the bin above; outside values are clamped; float noise is rounded away
    assert bins.tolist() == [0, 0, 0, 1, 2, 5, 5, 5, 3]
    assert bins.min() >= 0 and bins.max() <= 5


def test_categorical_relations():
    a, b = torch.tensor([0, 1, 1, 0]), torch.tensor([0, 0, 1, 1])
    assert Categorical("c", 2, "pair").relative(a, b).squeeze(1).tolist() == [0, 2, 3, 1]
    assert Binary("flip").relative(a, b).squeeze(1).tolist() == [0, 1, 0, 1]
    assert Categorical("c", 3, "target").n_classes == 3
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Categorical("c", 2).relative(torch.tensor([2]), torch.tensor([0]))


def test_space_masks_invalid_pairs():
    space = ActionSpace([Continuous("shift", -1, 1), Binary("gray", relation="pair")])
    pa = {
        "shift": torch.zeros(4),
        "gray": torch.zeros(4),
        "gray.valid": torch.tensor([1, 1, 0, 1]).bool(),
    }
    pb = {"shift": torch.tensor([0.1, float("nan"), 0.2, 0.3]), "gray": torch.ones(4)}
    t = space.targets(pa, pb)
    assert t.mask[:, 0].tolist() == [True, False, True, True]  # NaN action is masked, not faked
    assert t.mask[:, 1].tolist() == [True, True, False, True]
    assert space.n_targets == 2 and space.target_classes == [6, 4]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Continuous("x", 1.0, 1.0), "empty range"),
        (lambda: Continuous("x", 0.0, 1.0, n_bins=1), "n_bins"),
        (lambda: Continuous("x", 0.0, 1.0, relation="ratio"), "relation"),
        (lambda: Categorical("x", 1), "n_classes"),
        (lambda: Affine("x", translation_range=(0.5, -0.5)), "translation_range"),
        (lambda: ActionSpace([Continuous("x", 0, 1), Continuous("x", 0, 1)]), "duplicate"),
        (lambda: ActionSpace([Continuous("x", 0, 1)]).select(["y"]), "unknown action component"),
    ],
)
def test_invalid_declarations_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_shape_mismatch_and_missing_params_name_the_component():
    space = ActionSpace([Affine("crop")])
    with pytest.raises(ValueError, match="crop.*shape"):
        space.targets({"crop": torch.zeros(4, 2, 3)}, {"crop": torch.zeros(4, 2, 3)})
    with pytest.raises(ValueError, match=r"categories must lie in \[0, 2\]"):
        ActionSpace([Categorical("c", 3)]).targets(
            {"c": torch.tensor([0, 3])}, {"c": torch.zeros(2)}
        )
    with pytest.raises(ValueError, match="crop.*no parameters"):
        space.targets({"other": torch.zeros(4)}, {"other": torch.zeros(4)})


def test_normalised_values_lie_in_unit_range():
    comp = Continuous("g", -6, 6)
    values = comp.normalised(torch.tensor([[-100.0], [0.0], [6.0]]))
    assert values.squeeze(1).tolist() == [-1.0, 0.0, 1.0]
    assert not math.isnan(values.sum())
