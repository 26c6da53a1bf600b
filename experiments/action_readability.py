"""How readable is each action from two views of the demo sound set, before any training?

An efference copy can only shape the encoder if its inverse model beats guessing. This
script asks the question of the views themselves: it draws 8 view pairs of every demo clip
with the audio pipeline (``key=value`` overrides as for ``stec-audio``; the pitch action at
±12 semitones is on), describes each view by plain log-mel statistics (per mel bin the mean
and standard deviation over time, per frame the mean over mel bins) or by a randomly
initialised encoder's features, and trains three readers of each component's first target
on 80% of the pairs: a logistic regression on both views' features, one on their
difference, and a one-hidden-layer MLP on both. It prints their held-out accuracy beside
the rate of always guessing the most frequent training class.

    python experiments/action_readability.py                     # the default pipeline
    python experiments/action_readability.py augment.rrc.enabled=false augment.mixup.enabled=false
    python experiments/action_readability.py --encoder random
    python experiments/action_readability.py --passes 1 --clips 100   # a quick look

About 10 minutes on 2 cores per run (the logistic regressions dominate).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from stec import TwoViews
from stec.cli import compose_config
from stec_audio import app
from stec_audio.augment import build_audio_pipeline
from stec_audio.frontend import LogMelNormalizer

PASSES = 8
BATCH = 50


def logmel_statistics(views: torch.Tensor) -> torch.Tensor:
    """``[B, 1, F, T]`` or ``[B, F, T]`` log-mel views → ``[B, 2F + T]`` plain features."""
    v = views.squeeze(1) if views.dim() == 4 else views
    return torch.cat([v.mean(-1), v.std(-1), v.mean(-2)], 1)


def standardised(features: np.ndarray, train: np.ndarray) -> np.ndarray:
    return (features - features[train].mean(0)) / (features[train].std(0) + 1e-6)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Prints and returns, per component's first target, the held-out accuracy of each
    reader (``linear_concat``, ``linear_diff``, ``mlp_concat``) and the ``majority`` rate."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", choices=["logmel", "random"], default="logmel")
    parser.add_argument("--passes", type=int, default=PASSES, help="view pairs per clip")
    parser.add_argument("--clips", type=int, default=0, help="the first N clips (0: all)")
    parser.add_argument("overrides", nargs="*", help="stec-audio key=value overrides")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    base = ["augment.pitch.enabled=true", "augment.pitch.max_semitones=12"]
    cfg = compose_config("audio", base + ["trainer.num_workers=0", "trainer.progress=false"]
                         + args.overrides)  # fmt: skip
    index = app.build_index(cfg)
    dataset = app.clip_dataset(cfg, index)
    norm = app.norm_stats(cfg, index, dataset)
    views = TwoViews(
        build_audio_pipeline(app.pipeline_config(cfg, norm)), prepare=LogMelNormalizer(norm)
    )
    space = views.action_space()
    encoder = logmel_statistics if args.encoder == "logmel" else app.new_encoder(cfg).eval()
    print(f"encoder {args.encoder}, overrides {' '.join(args.overrides) or '(none)'}")

    n_clips = min(args.clips or len(dataset), len(dataset))
    clips = torch.stack([dataset[i][0] for i in range(n_clips)])
    h_a, h_b, classes = [], [], []
    with torch.no_grad():
        for _ in range(args.passes):
            for start in range(0, len(clips), BATCH):
                view_a, view_b, params_a, params_b = views(clips[start : start + BATCH])
                h_a.append(encoder(view_a))
                h_b.append(encoder(view_b))
                classes.append(space.targets(params_a, params_b).classes)
    a, b = torch.cat(h_a).numpy(), torch.cat(h_b).numpy()
    classes = torch.cat(classes).numpy()
    train = np.arange(len(a)) < int(0.8 * len(a))
    both = np.concatenate([a, b], 1)

    def logistic(features: np.ndarray, y: np.ndarray) -> float:
        f = standardised(features, train)
        model = LogisticRegression(C=0.1, max_iter=2000).fit(f[train], y[train])
        return float(model.score(f[~train], y[~train]))

    readability: dict[str, dict[str, float]] = {}
    for component in space.slices.values():
        target = component.start
        y = classes[:, target]
        f = standardised(both, train)
        mlp = MLPClassifier((256,), alpha=1e-2, max_iter=300, early_stopping=True,
                            random_state=0).fit(f[train], y[train])  # fmt: skip
        scores = {
            "majority": float((y[~train] == np.bincount(y[train]).argmax()).mean()),
            "linear_concat": logistic(both, y),
            "linear_diff": logistic(b - a, y),
            "mlp_concat": float(mlp.score(f[~train], y[~train])),
        }
        readability[space.target_names[target]] = scores
        print(
            f"{space.target_names[target]:20s} "
            + " ".join(f"{k.replace('_', '-')} {v:.2f}" for k, v in scores.items()),
            flush=True,
        )
    return readability


if __name__ == "__main__":
    main()
