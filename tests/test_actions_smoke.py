import torch

from stec import ActionSpace, Affine, Binary, Continuous


def test_space_reports_targets():
    space = ActionSpace([Continuous("shift", -1, 1), Affine("crop"), Binary("flip")])
    assert space.n_targets == 8
    params = {"shift": torch.zeros(4), "crop": torch.eye(3).expand(4, 3, 3), "flip": torch.zeros(4)}
    targets = space.targets(params, params)
    assert targets.classes.shape == (4, 8)
