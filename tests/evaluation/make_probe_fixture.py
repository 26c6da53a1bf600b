"""Write ``tests/evaluation/data/demo_random_audiontt.npz``: the fixed embeddings on which
the default linear probe is compared with scikit-learn's logistic regression.

The embeddings are those of a randomly initialised AudioNTT2020 (d = 512, ``seed``) on the
built-in demo sound set (10 classes x 40 clips, ESC-50 layout), exactly as
``stec-audio evaluate checkpoint=random`` computes them. Stored: ``features`` ``[N, 512]``
float16, ``labels`` ``[N]`` int64, ``folds`` ``[N]`` int64 (the set's 5 folds).

    PYTHONPATH=$PWD python tests/evaluation/make_probe_fixture.py [--seed 0] [--out FILE]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from stec.cli import compose_config
from stec.evaluation import embed
from stec_audio import app
from stec_audio.cli import frozen_encoder
from stec_audio.data.datasets import collate_skip_bad
from stec_audio.data.frontend import LogMelNormalizer

DEFAULT_OUT = Path(__file__).parent / "data" / "demo_random_audiontt.npz"


def demo_embeddings(
    seed: int, overrides: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features [N, D] float32, labels [N], folds [N])`` of the random encoder, embedded
    as ``stec-audio evaluate checkpoint=random`` embeds the training clips: the encoder
    drawn from ``seed``, the clips normalised on the device with the statistics of the
    training clips. ``overrides``: further config overrides (the tests use a smaller set)."""
    with tempfile.TemporaryDirectory() as prepared:  # statistics and cache, thrown away
        cfg = compose_config(
            "audio",
            ["data=demo", "checkpoint=random", f"seed={seed}", f"data.prepared={prepared}",
             "trainer.num_workers=0", "trainer.progress=false", *overrides],
        )  # fmt: skip
        frozen = frozen_encoder(cfg)
        dataset = app.clip_dataset(cfg, app.build_index(cfg, "train"), frozen.frontend)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=int(cfg.evaluate.embed_batch_size), collate_fn=collate_skip_bad
        )
        features, labels, positions = embed(
            frozen.encoder, loader, transform=LogMelNormalizer(frozen.norm)
        )
    folds = np.asarray(dataset.index.folds)[positions.numpy()].astype(np.int64)
    return features.numpy(), labels.numpy().astype(np.int64), folds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    features, labels, folds = demo_embeddings(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, features=features.astype(np.float16), labels=labels, folds=folds)
    print(f"{features.shape[0]} embeddings of size {features.shape[1]} written to {args.out}")


if __name__ == "__main__":
    main()
