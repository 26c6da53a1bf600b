"""The mixup memory bank in training: every clip enters it once per step, no view is mixed
with the other view of its own clip, and the bank's host-side position survives a reload."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from stec import Compose, TwoViews, build_method
from stec.engine.trainer import Trainer, TrainerConfig
from stec_audio.augment import Mixup, TimeCrop

ALPHA = (0.3, 0.3 + 1e-6)


class ConstantClips(Dataset):
    """Clip ``i`` is ``[1, 4, 12]`` filled with ``i / 10``, so any crop of it names it."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.full((1, 4, 12), i / 10), 0, i


class Recorder(nn.Module):
    """The two-view augmenter, keeping each step's inputs, views and mix ratios."""

    def __init__(self, inner: TwoViews) -> None:
        super().__init__()
        self.inner, self.steps = inner, []

    def forward(self, x: Tensor):
        view_a, view_b, params_a, params_b = self.inner(x)
        self.steps.append((x.clone(), view_a, view_b, params_a["mixup"], params_b["mixup"]))
        return view_a, view_b, params_a, params_b


def train(n_clips: int, steps: int, n_memory: int = 64) -> tuple[Mixup, list]:
    torch.manual_seed(3)
    mixup = Mixup(ratio=ALPHA, n_memory=n_memory)
    recorder = Recorder(TwoViews(Compose([TimeCrop(frames=8), mixup])))
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(32, 16))
    method = build_method("simclr", backbone, 16, efference="off", proj_hidden=16, proj_dim=8)
    cfg = TrainerConfig(epochs=1, max_steps=steps, batch_size=4, progress=False)
    Trainer(method, ConstantClips(n_clips), cfg, "unused", augmenter=recorder).fit()
    return mixup, recorder.steps


def clip_ids(values: Tensor) -> list[int]:
    return (values * 10).round().long().tolist()


def partner_ids(x: Tensor, view: Tensor, alpha: Tensor) -> list[int]:
    """The clip each view was mixed with, solved from ``log((1-α) e^x + α e^z)``."""
    x, out, a = x[:, 0, 0, 0].double(), view[:, 0, 0, 0].double(), alpha[:, 0].double()
    return clip_ids(torch.log((out.exp() - (1 - a) * x.exp()) / a))


def test_each_clip_enters_the_bank_once_per_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mixup, steps = train(n_clips=24, steps=3)
    seen = sorted(i for x, *_ in steps for i in clip_ids(x[:, 0, 0, 0]))
    assert len(seen) == 12 and len(set(seen)) == 12
    assert int(mixup.bank_count) == 12 and int(mixup.bank_pos) == 12
    assert sorted(clip_ids(mixup.bank[:12, 0, 0, 0])) == seen


def test_no_view_is_mixed_with_its_own_clip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, steps = train(n_clips=24, steps=6)
    earlier: set[int] = set()
    for number, (x, view_a, view_b, alpha_a, alpha_b) in enumerate(steps):
        own = clip_ids(x[:, 0, 0, 0])
        for view, alpha in ((view_a, alpha_a), (view_b, alpha_b)):
            partners = partner_ids(x, view, alpha)
            assert all(p != o for p, o in zip(partners, own, strict=True)), (number, partners)
            if number == 0:  # an empty bank: other clips of the batch
                assert set(partners) <= set(own)
            else:  # the bank holds only clips of earlier steps
                assert set(partners) <= earlier, (number, partners, own)
        earlier |= set(own)


def test_one_step_draws_from_the_bank_as_it_was_and_pushes_the_first_view_once():
    torch.manual_seed(0)
    mixup = Mixup(ratio=ALPHA, n_memory=8)
    mixup(torch.full((2, 1, 2, 3), 0.5))  # outside a step: pushed right away
    assert int(mixup.bank_count) == 2
    first, second = torch.full((3, 1, 2, 3), 1.0), torch.full((3, 1, 2, 3), 2.0)
    with mixup.one_step():
        out_a, params_a = mixup(first)
        assert int(mixup.bank_count) == 2  # nothing pushed inside the step
        out_b, params_b = mixup(second)
    assert int(mixup.bank_count) == 5 and int(mixup.bank_pos) == 5
    assert torch.equal(mixup.bank[2:5], first)  # the first call's inputs, once
    for x, out, params in ((first, out_a, params_a), (second, out_b, params_b)):
        a = params["mixup"][:, 0]
        expected = torch.log((1 - a) * math.exp(x[0, 0, 0, 0]) + a * math.exp(0.5))
        assert torch.allclose(out[:, 0, 0, 0], expected, atol=1e-5)  # partners: the old bank


@pytest.mark.parametrize("pushes", [3, 5])
def test_a_reloaded_bank_continues_where_it_stopped(pushes):
    mixup = Mixup(n_memory=6)
    for i in range(pushes):
        mixup(torch.full((2, 1, 2, 3), float(i)))
    fresh = Mixup(n_memory=6)
    fresh.load_state_dict(mixup.state_dict())
    for module in (mixup, fresh):
        module(torch.full((2, 1, 2, 3), 9.0))
    assert torch.equal(fresh.bank, mixup.bank)
    assert int(fresh.bank_pos) == int(mixup.bank_pos) == (2 * pushes + 2) % 6
    assert int(fresh.bank_count) == min(2 * pushes + 2, 6)


def test_two_views_called_directly_push_each_clip_once():
    # outside the trainer (the README's own loop): TwoViews makes one step of its two calls
    mixup = Mixup(ratio=ALPHA, source="bank", n_memory=64)
    views = TwoViews(Compose([mixup]))
    for step in range(3):
        views(torch.full((8, 1, 4, 12), float(step)))
    assert mixup._count == 24 and int(mixup.bank_count) == 24
    assert sorted(mixup.bank[:24, 0, 0, 0].tolist()) == [0.0] * 8 + [1.0] * 8 + [2.0] * 8


def test_a_clip_stage_background_is_shared_by_the_two_views_of_a_clip():
    torch.manual_seed(1)
    mixup = Mixup(ratio=(0.1, 0.4), stage="clip", n_memory=64)
    views = TwoViews(Compose([mixup, TimeCrop(frames=4)]))
    views(torch.arange(8, dtype=torch.float32).reshape(8, 1, 1, 1).expand(8, 1, 4, 12) / 10)
    clips = (10 + torch.arange(8, dtype=torch.float32)).reshape(8, 1, 1, 1) / 10
    clips = clips.expand(8, 1, 4, 12)
    view_a, view_b, params_a, params_b = views(clips)
    alpha_a, alpha_b = params_a["mixup"], params_b["mixup"]
    partners_a = partner_ids(clips, view_a, alpha_a)
    partners_b = partner_ids(clips, view_b, alpha_b)
    assert partners_a == partners_b  # one background per clip
    assert set(partners_a) <= set(range(8)) and len(set(partners_a)) > 1  # from the bank
    assert not torch.allclose(alpha_a, alpha_b)  # each view its own share of it


def test_a_clip_stage_background_moves_with_each_views_map():
    from stec_audio.augment import TimeFrequencyCrop

    torch.manual_seed(2)
    background = torch.randn(1, 1, 16, 60)
    mixup = Mixup(ratio=(0.2, 0.4), stage="clip", n_memory=1)
    mixup(background)  # the bank's one clip: every view's background
    geometry = TimeFrequencyCrop(frames=20, n_mels=16, max_semitones=3.0)
    clips = torch.randn(5, 1, 16, 60)
    view_a, view_b, params_a, params_b = TwoViews(Compose([mixup, geometry]))(clips)
    for view, params in ((view_a, params_a), (view_b, params_b)):
        a = params["mixup"].reshape(5, 1, 1, 1)
        mixed = torch.logaddexp(clips + torch.log1p(-a), background + torch.log(a))
        grid = geometry.grid(torch.linalg.inv(params["geometry"]), 16, 60)
        expected = torch.nn.functional.grid_sample(mixed, grid, align_corners=False)
        assert torch.allclose(view, expected, atol=1e-5)
    # the background of a view-stage mixup does not go through the map
    mixup_view = Mixup(ratio=(0.2, 0.4), stage="view", n_memory=1)
    background_view = geometry(background)[0]
    mixup_view(background_view)
    views = TwoViews(Compose([geometry, mixup_view]))(clips)
    a = views[2]["mixup"].reshape(5, 1, 1, 1)
    grid = geometry.grid(torch.linalg.inv(views[2]["geometry"]), 16, 60)
    mapped = torch.nn.functional.grid_sample(clips, grid, align_corners=False)
    assert not torch.allclose(views[0], mapped)  # (the background is there)
    assert torch.allclose(
        views[0],
        torch.logaddexp(mapped + torch.log1p(-a), background_view + torch.log(a)),
        atol=1e-5,
    )


def test_the_stage_is_checked():
    with pytest.raises(ValueError, match=r"stage must be one of \('view', 'clip'\), got 'pair'"):
        Mixup(stage="pair")
