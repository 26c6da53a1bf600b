"""An inverse model recovers the time-crop offset from two views; shuffled targets do not."""

from __future__ import annotations

import torch

from stec.actions import ActionSpace
from stec.efference import InverseModel
from stec_audio.augment import TimeCrop

FRAMES, CLIP = 32, 160


def clips(batch: int) -> torch.Tensor:
    """A common upward ramp over time plus a random level and texture per clip."""
    ramp = torch.linspace(0.0, 4.0, CLIP).expand(batch, 1, 8, CLIP)
    level = 2.0 * torch.randn(batch, 1, 1, 1)
    return ramp + level + 0.3 * torch.randn(batch, 1, 8, CLIP)


def train(shuffle: bool, steps: int = 300) -> tuple[float, float]:
    torch.manual_seed(0)
    aug = TimeCrop(frames=FRAMES, action_range=(-4.0, 4.0))
    space = ActionSpace(aug.components())
    model = InverseModel(8 * FRAMES, space, hidden=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        x = clips(128)
        (a, pa), (b, pb) = aug(x), aug(x)
        tg = space.targets(pa, pb)
        if shuffle:
            tg.classes = tg.classes[torch.randperm(len(tg.classes))]
        loss, _ = model.loss(model(a.flatten(1), b.flatten(1)), tg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        x = clips(2000)
        (a, pa), (b, pb) = aug(x), aug(x)
        classes = space.targets(pa, pb).classes[:, 0]
        predicted = model(a.flatten(1), b.flatten(1))[:, 0, : space.target_classes[0]].argmax(1)
    majority = classes.bincount(minlength=6).max().item() / len(classes)
    return (predicted == classes).float().mean().item(), majority


def test_inverse_model_learns_the_time_offset_and_shuffled_targets_stay_at_chance():
    accuracy, majority = train(shuffle=False)
    shuffled, _ = train(shuffle=True)
    assert accuracy > majority + 0.35, (accuracy, majority)
    assert shuffled < majority + 0.08, (shuffled, majority)
