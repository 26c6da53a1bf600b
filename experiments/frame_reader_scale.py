"""Does the inverse model read the frame lag profile better when its inputs are standardised?

The frame reader's peaks enter the inverse model's MLP beside the pooled features on
another footing: on the demo sound set their heights share an offset of about 0.6, four
times their spread, and their positions spread over a quarter of the lag range. This
script trains the inverse model as pretraining does — batches of 32 fresh view pairs,
AdamW at 3e-4, one step per batch — on a *frozen* encoder (give it pretrained weights with
``encoder.init=RUN/checkpoints/last.pt``), so that only how it reads changes, in four forms:

- ``plain`` — the profile and its peaks as they are (``efference.standardise_peaks=false``);
- ``peaks`` — the peaks standardised over the batch (``efference.standardise_peaks=true``);
- ``profile`` — the whole profile and its peaks standardised;
- ``inputs`` — every input standardised, the pooled features too.

It prints, per form and reader seed, each target's accuracy on the batches of the last
20% of the steps, each scored just after its step (reports' "in training" scores a batch
just before it), and on 1,280 fresh pairs drawn after training (of the same clips: the
reader learns to align two views, not the clips).

    python experiments/frame_reader_scale.py augment=composed \
        encoder.init=RUN/checkpoints/last.pt

About 6 minutes on 2 cores for the demo's 360 steps.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from stec.efference import InverseModel

BATCH, FRESH_BATCHES = 32, 40
FORMS = ("plain", "peaks", "profile", "inputs")


class StandardisedInputs(InverseModel):
    """The inverse model with its whole frame profile (``profile``) or every input
    (``inputs``) standardised over the batch."""

    def __init__(self, form: str, in_dim: int, *args, **kwargs) -> None:
        super().__init__(in_dim, *args, **kwargs)
        profile_dim = self.frame_reader.out_dim
        self.form = form
        self.standardise = nn.BatchNorm1d(
            profile_dim + (2 * in_dim if form == "inputs" else 0), affine=False
        )

    def forward(self, h_a: Tensor, h_b: Tensor, frames_a: Tensor, frames_b: Tensor) -> Tensor:
        profile = self.frame_reader(frames_a, frames_b)
        if self.form == "inputs":
            x = self.standardise(torch.cat([h_a, h_b, profile], 1))
        else:
            x = torch.cat([h_a, h_b, self.standardise(profile)], 1)
        out = self.net(x)
        return out.view(out.shape[0], self.space.n_targets, self.space.max_classes)


def draw(views, encoder, clips: Tensor, batches: int) -> list[tuple]:
    """``batches`` batches of view pairs of random clips: features, frames and targets."""
    space, drawn = views.action_space(), []
    with torch.no_grad():
        for _ in range(batches):
            a, b, params_a, params_b = views(clips[torch.randint(len(clips), (BATCH,))])
            (h_a, f_a), (h_b, f_b) = (
                encoder.features_with_frames(a),
                encoder.features_with_frames(b),
            )
            drawn.append((h_a, h_b, f_a, f_b, space.targets(params_a, params_b)))
    return drawn


def majority(train: list[tuple], fresh: list[tuple], target: int) -> float:
    """The fresh-pair accuracy of always guessing the target's most frequent training class."""
    seen = torch.cat([batch[4].classes[:, target] for batch in train]).mode().values
    return float((torch.cat([b[4].classes[:, target] for b in fresh]) == seen).float().mean())


def read(form: str, seed: int, space, dims: tuple[int, int], train, fresh) -> tuple:
    """Train one form of the inverse model; ``(last-20% accuracy, fresh-pair accuracy)`` per
    target."""
    torch.manual_seed(seed)
    in_dim, frame_dim = dims
    if form in ("plain", "peaks"):
        model = InverseModel(in_dim, space, frame_dim=frame_dim, standardise_peaks=form == "peaks")
    else:
        model = StandardisedInputs(form, in_dim, space, frame_dim=frame_dim)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-6)

    def accuracy(batch) -> Tensor:
        model.eval()
        with torch.no_grad():
            logits = model(*batch[:4])
        model.train()
        return (logits.argmax(-1) == batch[4].classes).float().mean(0)

    late = []
    for step, batch in enumerate(train):
        loss, _ = model.loss(model(*batch[:4]), batch[4])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step >= 0.8 * len(train):
            late.append(accuracy(batch))
    return torch.stack(late).mean(0), torch.stack([accuracy(b) for b in fresh]).mean(0)


def main(argv: Sequence[str] | None = None) -> dict[str, list[float]]:
    """Prints and returns ``{"<form> seed <s>": [last-20% and fresh-pair accuracy per
    target], "majority": [fresh-pair majority rate per target]}``."""
    from stec import TwoViews
    from stec.cli import compose_config
    from stec_audio import app
    from stec_audio.augment import build_audio_pipeline
    from stec_audio.data.frontend import LogMelNormalizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=360, help="training steps of each reader")
    parser.add_argument("--seeds", default="1,2", help="reader seeds, comma-separated")
    parser.add_argument("--clips", type=int, default=0, help="the first N clips (0: all)")
    parser.add_argument("--forms", default=",".join(FORMS), help=f"any of {', '.join(FORMS)}")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of stec-audio")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cfg = compose_config("audio", ["trainer.num_workers=0", *args.overrides])
    index = app.build_index(cfg)
    dataset = app.clip_dataset(cfg, index)
    norm = app.norm_stats(cfg, index, dataset)
    views = TwoViews(
        build_audio_pipeline(app.pipeline_config(cfg, norm)), prepare=LogMelNormalizer(norm)
    )
    encoder = app.new_encoder(cfg).eval()
    n_clips = min(args.clips or len(dataset), len(dataset))
    clips = torch.stack([dataset[i][0] for i in range(n_clips)])
    train = draw(views, encoder, clips, args.steps)
    fresh = draw(views, encoder, clips, FRESH_BATCHES)
    space, dims = views.action_space(), (train[0][0].shape[1], train[0][2].shape[2])
    results = {"majority": [majority(train, fresh, t) for t in range(space.n_targets)]}
    print(f"targets {space.target_names}; majority rate (fresh pairs) "
          + " ".join(f"{rate:.2f}" for rate in results["majority"]))  # fmt: skip
    for form in args.forms.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            late, test = read(form, seed, space, dims, train, fresh)
            results[f"{form} seed {seed}"] = late.tolist() + test.tolist()
            print(f"{form:8s} seed {seed}: in training {' '.join(f'{v:.2f}' for v in late)}, "
                  f"fresh pairs {' '.join(f'{v:.2f}' for v in test)}", flush=True)  # fmt: skip
    return results


if __name__ == "__main__":
    main()
