"""How readable is each action from two views, before any training?

An efference copy can only shape the encoder if its inverse model beats guessing. This
script asks the question of the views themselves: it draws ``--passes`` view pairs of
every clip (or image) with the pipeline of ``stec-audio`` (or ``stec-vision``; ``key=value``
overrides as for the CLI), keeps 80% of the *clips* for training and the rest for testing
(both views and every pair of a clip on one side), and trains readers of every target:

- ``cnn`` — the whole-view reader: a small CNN on both views stacked as channels, its last
  feature map flattened (so where a pattern sits is kept), one head per target;
- ``xcorr`` (audio only) — the alignment reader: an MLP on the cross-correlation of the two
  views over time lags (of the frame-to-frame changes of their mean over mel bins, which
  neither a pitch shift nor a level ramp moves) and over mel-bin lags (of their mean
  spectra), with each profile's peak: what a shift in time or in pitch between two views
  of the same clip changes;
- ``linear_concat``, ``linear_diff``, ``mlp_concat`` (audio only) — readers of plain log-mel
  statistics of each view (per mel bin the mean and standard deviation over time, per
  frame the mean over mel bins): a logistic regression on both views' statistics, one on
  their difference, and a one-hidden-layer MLP on both; ``--encoder random`` reads a
  randomly initialised encoder's features instead.

It prints each reader's held-out accuracy beside the rate of always guessing the most
frequent training class. "Not readable" then means not readable from the views, not only
from their means.

    python experiments/action_readability.py                      # the default (composed) map
    python experiments/action_readability.py augment=separate
    python experiments/action_readability.py augment=separate augment.rrc.enabled=false \
        augment.mixup.enabled=false
    python experiments/action_readability.py --modality vision    # the demo shapes
    python experiments/action_readability.py --readers cnn --passes 2 --clips 100  # a quick look

The audio default (8 passes over 400 clips, every reader) takes about 20 minutes on 2
cores; ``--readers cnn,xcorr`` about 5.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

PASSES = 8
BATCH = 50
STATS_READERS = ("linear_concat", "linear_diff", "mlp_concat")


def logmel_statistics(views: Tensor) -> Tensor:
    """``[B, 1, F, T]`` or ``[B, F, T]`` log-mel views → ``[B, 2F + T]`` plain features."""
    v = views.squeeze(1) if views.dim() == 4 else views
    return torch.cat([v.mean(-1), v.std(-1), v.mean(-2)], 1)


def lag_profile(a: Tensor, b: Tensor, max_lag: int) -> Tensor:
    """``[N, C, L]`` x2 -> ``[N, C, 2 max_lag + 1]``: the correlation of ``a[t]`` and
    ``b[t + lag]`` over the samples both have, per channel (Pearson, centred per lag)."""
    length = a.shape[-1]
    out = []
    for lag in range(-max_lag, max_lag + 1):
        x = a[..., max(-lag, 0) : length - max(lag, 0)]
        y = b[..., max(lag, 0) : length - max(-lag, 0)]
        x, y = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
        out.append((x * y).mean(-1) / (x.std(-1, correction=0) * y.std(-1, correction=0) + 1e-6))
    return torch.stack(out, -1)


def alignment_features(view_a: Tensor, view_b: Tensor) -> Tensor:
    """``[N, 1, F, T]`` log-mel views -> ``[N, 2T + 2F + 1]``: their cross-correlation over
    time lags (of the frame-to-frame changes of the mean over mel bins, which neither a
    pitch shift nor a level ramp moves) and over mel-bin lags (of the mean spectra), and
    the lag of each profile's peak with its height."""

    def changes(v: Tensor) -> Tensor:  # [N, 1, T - 1]
        return v[:, 0].mean(1, keepdim=True).diff(dim=-1)

    t, f = view_a.shape[-1], view_a.shape[2]
    in_time = lag_profile(changes(view_a), changes(view_b), t - 9)[:, 0]
    spectrum = [v[:, 0].mean(-1, keepdim=True).transpose(1, 2) for v in (view_a, view_b)]
    in_freq = lag_profile(*spectrum, f - 2)[:, 0]
    peaks = [
        torch.stack([p.argmax(1).float() - p.shape[1] // 2, p.amax(1)], 1)
        for p in (in_time, in_freq)
    ]
    return torch.cat([in_time, in_freq, *peaks], 1)


def standardised(features: np.ndarray, train: np.ndarray) -> np.ndarray:
    return (features - features[train].mean(0)) / (features[train].std(0) + 1e-6)


class PairReader(nn.Module):
    """A small CNN on two views stacked as channels ``[B, 2C, H, W]`` → logits per target.

    Three conv blocks (32, 64, 64 channels, each halving both axes), then the map is
    flattened, not pooled, so that the position of what the two views hold is kept."""

    def __init__(self, channels: int, height: int, width: int, classes: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 2 * channels
        for c_out in (32, 64, 64):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        n_features = c_in * (height // 8) * (width // 8)
        self.body = nn.Sequential(nn.Linear(n_features, 256), nn.ReLU(), nn.Dropout(0.2))
        self.heads = nn.ModuleList(nn.Linear(256, n) for n in classes)

    def forward(self, view_a: Tensor, view_b: Tensor) -> list[Tensor]:
        h = self.body(self.trunk(torch.cat([view_a, view_b], dim=1)))
        return [head(h) for head in self.heads]


def read_with_cnn(
    view_a: Tensor,
    view_b: Tensor,
    classes: Tensor,
    n_classes: Sequence[int],
    train: np.ndarray,
    epochs: int,
) -> list[float]:
    """Held-out accuracy of :class:`PairReader` on every target (``classes [N, T]``)."""
    torch.manual_seed(0)
    _, c, h, w = view_a.shape
    reader = PairReader(c, h, w, n_classes)
    optimiser = torch.optim.Adam(reader.parameters(), lr=1e-3, weight_decay=1e-4)
    train_idx = torch.from_numpy(np.flatnonzero(train))
    test_idx = torch.from_numpy(np.flatnonzero(~train))
    for _ in range(epochs):
        reader.train()
        for batch in train_idx[torch.randperm(len(train_idx))].split(64):
            if len(batch) < 2:
                continue
            logits = reader(view_a[batch], view_b[batch])
            loss = sum(
                nn.functional.cross_entropy(out, classes[batch, t]) for t, out in enumerate(logits)
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    reader.eval()
    correct = torch.zeros(len(n_classes))
    with torch.no_grad():
        for batch in test_idx.split(256):
            logits = reader(view_a[batch], view_b[batch])
            for t, out in enumerate(logits):
                correct[t] += (out.argmax(1) == classes[batch, t]).sum()
    return (correct / len(test_idx)).tolist()


def audio_views(
    overrides: Sequence[str], n_clips: int, passes: int, encoder_name: str
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, object, Callable]:
    """``(view_a, view_b, features_a, features_b, clip ids, action space, ...)`` of the
    demo sound set drawn with the stec-audio pipeline."""
    from stec import TwoViews
    from stec.cli import compose_config
    from stec_audio import app
    from stec_audio.augment import build_audio_pipeline
    from stec_audio.data.frontend import LogMelNormalizer

    cfg = compose_config("audio", ["trainer.num_workers=0", "trainer.progress=false", *overrides])
    index = app.build_index(cfg)
    dataset = app.clip_dataset(cfg, index)
    norm = app.norm_stats(cfg, index, dataset)
    views = TwoViews(
        build_audio_pipeline(app.pipeline_config(cfg, norm)), prepare=LogMelNormalizer(norm)
    )
    encoder = logmel_statistics if encoder_name == "logmel" else app.new_encoder(cfg).eval()
    n_clips = min(n_clips or len(dataset), len(dataset))
    clips = torch.stack([dataset[i][0] for i in range(n_clips)])
    return _draw(views, clips, passes, encoder)


def vision_views(
    overrides: Sequence[str], n_images: int, passes: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, object]:
    """The same for the demo shapes with the stec-vision pipeline (no statistics reader)."""
    from omegaconf import OmegaConf

    from stec.cli import compose_config
    from stec_vision import cli
    from stec_vision.augment import build_two_views

    cfg = compose_config("vision", ["trainer.num_workers=0", *overrides])
    train = cli.dataset(cfg, cfg.data.train_split, train=True)
    augment = OmegaConf.to_container(cfg.augment, resolve=True) or None
    views = build_two_views(cfg.data.preset, int(cfg.data.size), augment)
    n_images = min(n_images or len(train), len(train))
    images = torch.stack([torch.as_tensor(train[i][0]) for i in range(n_images)])
    return _draw(views, images, passes, None)


def _draw(views, items: Tensor, passes: int, encoder) -> tuple:
    space = views.action_space()
    view_a, view_b, feat_a, feat_b, classes, ids = [], [], [], [], [], []
    with torch.no_grad():
        for _ in range(passes):
            for start in range(0, len(items), BATCH):
                a, b, params_a, params_b = views(items[start : start + BATCH])
                view_a.append(a.float())
                view_b.append(b.float())
                if encoder is not None:
                    feat_a.append(encoder(a))
                    feat_b.append(encoder(b))
                classes.append(space.targets(params_a, params_b).classes)
                ids.append(torch.arange(start, start + len(a)))
    cat = torch.cat
    features = (cat(feat_a), cat(feat_b)) if encoder is not None else (None, None)
    return cat(view_a), cat(view_b), *features, cat(classes), cat(ids), space


def mlp_reader(features: np.ndarray, y: np.ndarray, train: np.ndarray) -> float:
    from sklearn.neural_network import MLPClassifier

    f = standardised(features, train)
    mlp = MLPClassifier((256,), alpha=1e-2, max_iter=300, early_stopping=True, random_state=0)
    return float(mlp.fit(f[train], y[train]).score(f[~train], y[~train]))


def stats_readers(a: np.ndarray, b: np.ndarray, y: np.ndarray, train: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression

    def logistic(features: np.ndarray) -> float:
        f = standardised(features, train)
        model = LogisticRegression(C=0.1, max_iter=2000).fit(f[train], y[train])
        return float(model.score(f[~train], y[~train]))

    both = np.concatenate([a, b], 1)
    return {
        "linear_concat": logistic(both),
        "linear_diff": logistic(b - a),
        "mlp_concat": mlp_reader(both, y, train),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Prints and returns, per target, the held-out accuracy of each reader and the
    ``majority`` rate."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modality", choices=["audio", "vision"], default="audio")
    parser.add_argument("--readers", default="cnn,xcorr,stats", help="any of cnn, xcorr, stats")
    parser.add_argument("--encoder", choices=["logmel", "random"], default="logmel")
    parser.add_argument("--passes", type=int, default=PASSES, help="view pairs per clip")
    parser.add_argument("--clips", type=int, default=0, help="the first N clips (0: all)")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs of the CNN")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the CLI")
    args = parser.parse_args(argv)
    readers = set(args.readers.split(","))
    torch.manual_seed(0)
    torch.set_num_threads(1 if args.clips and args.clips < 200 else torch.get_num_threads())
    if args.modality == "audio":
        drawn = audio_views(args.overrides, args.clips, args.passes, args.encoder)
    else:
        drawn = vision_views(args.overrides, args.clips, args.passes)
        readers -= {"stats", "xcorr"}
    view_a, view_b, feat_a, feat_b, classes, ids, space = drawn
    print(f"{args.modality}, overrides {' '.join(args.overrides) or '(none)'}: {space}")
    # split by clip: the pairs of one clip are all on one side
    train = (ids.numpy() % 5) != 4
    y_all = classes.numpy()
    n_classes = space.target_classes
    cnn = read_with_cnn(view_a, view_b, classes, n_classes, train, args.epochs) if (
        "cnn" in readers
    ) else None  # fmt: skip
    aligned = alignment_features(view_a, view_b).numpy() if "xcorr" in readers else None
    readability: dict[str, dict[str, float]] = {}
    for t, name in enumerate(space.target_names):
        y = y_all[:, t]
        scores = {"majority": float((y[~train] == np.bincount(y[train]).argmax()).mean())}
        if cnn is not None:
            scores["cnn"] = cnn[t]
        if aligned is not None:
            scores["xcorr"] = mlp_reader(aligned, y, train)
        if "stats" in readers:
            scores.update(stats_readers(feat_a.numpy(), feat_b.numpy(), y, train))
        readability[name] = scores
        print(
            f"{name:22s} " + " ".join(f"{k.replace('_', '-')} {v:.2f}" for k, v in scores.items()),
            flush=True,
        )
    return readability


if __name__ == "__main__":
    main()
