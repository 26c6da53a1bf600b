"""Log-mel encoders: BYOL-A's AudioNTT2020 and a compact residual network.

Both map log-mels ``[B, 1, F, T]`` (any ``T``) to clip features ``[B, feature_dim]``
through frame features ``[B, T', feature_dim]`` (one frame per 8 input frames, i.e.
80 ms with a 10 ms hop) pooled by max over time plus mean over time, as in BYOL-A.

Attributes used by chunked inference (:mod:`stec_audio.hear`):

- ``frame_hop``: input frames per output frame (8);
- ``frame_offset``: input frame at the centre of output frame 0 (output ``k`` is centred
  at input frame ``frame_hop * k + frame_offset``);
- ``context_frames``: extra input frames (a multiple of ``frame_hop``) needed on each side
  of the input frames ``[hop * k0, hop * k1)`` to compute output frames ``k0 .. k1 - 1``
  exactly, so a long input cut into pieces with that much overlap gives exactly the frame
  features of the whole input.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


def _check_input(x: Tensor, n_mels: int, who: str) -> None:
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != n_mels:
        raise ValueError(
            f"{who}: expected log-mels of shape [B, 1, {n_mels}, T], got {tuple(x.shape)}"
        )


def pool_frames(frames: Tensor) -> Tensor:
    """BYOL-A pooling: ``[B, T', D] -> [B, D]`` max over time plus mean over time."""
    return frames.amax(dim=1) + frames.mean(dim=1)


class AudioNTT2020(nn.Module):
    """BYOL-A's encoder (the DCASE2020 Task 6 NTT network with BYOL-A's pooling).

    ``features``: 3 x [Conv3x3(64) -> BatchNorm -> ReLU -> MaxPool2]; the map
    ``[B, 64, F/8, T/8]`` becomes ``[B, T/8, (F/8) * 64]`` (mel-major, channel-minor, as in
    BYOL-A), then ``fc``: Linear(d) -> ReLU -> Dropout(0.3) -> Linear(d) -> ReLU. The
    state-dict keys (``features.0.weight``, ``features.1.*``, ``features.4.*``,
    ``features.5.*``, ``features.8.*``, ``features.9.*``, ``fc.0.*``, ``fc.3.*``) match
    BYOL-A's published weights, so those load with ``load_state_dict``.

    Inputs shorter than 8 frames are zero-padded on the right to 8 frames (one output).

    Args:
        n_mels: mel bins ``F`` of the input.
        d: feature size (BYOL-A publishes 512, 1024 and 2048).
    """

    name = "audiontt"
    frame_hop = 8
    frame_dim = 64  # channels of the fine frames of features_with_frames
    frame_offset = 3.5  # the max-pools make output k cover input frames [8k, 8k + 8)
    context_frames = 8  # receptive field of output k: input frames [8k - 7, 8k + 14]

    def __init__(self, n_mels: int = 64, d: int = 512) -> None:
        super().__init__()
        if int(n_mels) != n_mels or n_mels < 8:
            raise ValueError(f"AudioNTT2020: n_mels must be an integer >= 8, got {n_mels}")
        if int(d) != d or d < 1:
            raise ValueError(f"AudioNTT2020: d must be a positive integer, got {d}")
        self.kwargs: dict[str, Any] = {"n_mels": int(n_mels), "d": int(d)}
        self.n_mels, self.d, self.feature_dim = int(n_mels), int(d), int(d)
        layers: list[nn.Module] = []
        for c_in in (1, 64, 64):
            block = [
                nn.Conv2d(c_in, 64, 3, stride=1, padding=1),
                nn.BatchNorm2d(64),
                nn.ReLU(),
                nn.MaxPool2d(2, stride=2),
            ]
            layers += block
        # one flat Sequential keeps BYOL-A's state-dict keys; the first block ends here
        self.first_block_end = len(block)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Linear(64 * (self.n_mels // 8), d),
            nn.ReLU(),
            nn.Dropout(p=0.3),
            nn.Linear(d, d),
            nn.ReLU(),
        )

    def n_frames(self, t: int) -> int:
        """Number of output frames for ``t`` input frames."""
        return max(t, self.frame_hop) // self.frame_hop

    def frame_features(self, x: Tensor) -> Tensor:
        """``[B, 1, F, T] -> [B, T // 8, d]`` frame-level features (80 ms per frame)."""
        return self._frames(self.features(self._padded(x)))

    def features_with_frames(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, 1, F, T] -> (h [B, d], fine [B, T // 2, 64])`` in one pass: the clip
        features and the first block's output averaged over frequency, 20 ms per frame
        (what the inverse model correlates with ``inverse_input=frames``: the 80 ms frames
        are too coarse to tell how two views of a steady sound are offset)."""
        early = self.features[: self.first_block_end](self._padded(x))  # [B, 64, F/2, T/2]
        h = self.pool(self._frames(self.features[self.first_block_end :](early)))
        return h, early.mean(dim=2).transpose(1, 2)

    def _padded(self, x: Tensor) -> Tensor:
        _check_input(x, self.n_mels, type(self).__name__)
        if x.shape[-1] < self.frame_hop:
            x = F.pad(x, (0, self.frame_hop - x.shape[-1]))
        return x

    def _frames(self, x: Tensor) -> Tensor:
        x = x.permute(0, 3, 2, 1)  # [B, 64, F/8, T/8] -> [B, T/8, F/8, 64]
        b, t, f, c = x.shape
        return self.fc(x.reshape(b, t, f * c))

    def pool(self, frames: Tensor) -> Tensor:
        """``[B, T', d] -> [B, d]``: the clip feature of frame features (max + mean)."""
        return pool_frames(frames)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 1, F, T] -> [B, d]``."""
        return self.pool(self.frame_features(x))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a residual connection (ResNet v1)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class AudioResNet(nn.Module):
    """A compact ResNet on log-mels with the AudioNTT2020 interface.

    Stem Conv3x3 -> BN -> ReLU, then one stage of ``blocks[i]`` basic blocks per width;
    every stage after the first halves both axes with a strided convolution (stride 2, so
    output ``k`` is centred at input frame ``8k`` with four stages). The last map
    ``[B, C, F', T']`` becomes ``[B, T', F' * C]`` (like AudioNTT2020, keeping where in
    frequency a pattern sits), then Linear(d) -> ReLU per frame; pooling is max + mean
    over time. ``T' = ceil(T / 2^(stages - 1))``; any ``T >= 1`` works.

    Args:
        n_mels: mel bins ``F`` of the input.
        widths: channels of each stage.
        blocks: basic blocks per stage (same length as ``widths``).
        d: feature size.
    """

    name = "resnet"
    frame_offset = 0.0

    def __init__(
        self,
        n_mels: int = 64,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        d: int = 512,
    ) -> None:
        super().__init__()
        widths, blocks = tuple(int(w) for w in widths), tuple(int(b) for b in blocks)
        if not widths or len(widths) != len(blocks) or min(widths) < 1 or min(blocks) < 1:
            raise ValueError(
                f"AudioResNet: widths {widths} and blocks {blocks} must be non-empty, positive "
                "and of the same length"
            )
        if int(n_mels) != n_mels or n_mels < 1 or int(d) != d or d < 1:
            raise ValueError(
                f"AudioResNet: n_mels and d must be positive integers, got {n_mels}, {d}"
            )
        self.kwargs: dict[str, Any] = {
            "n_mels": int(n_mels),
            "widths": list(widths),
            "blocks": list(blocks),
            "d": int(d),
        }
        self.n_mels, self.feature_dim = int(n_mels), int(d)
        self.frame_hop = 2 ** (len(widths) - 1)
        self.frame_dim = widths[0]  # channels of the fine frames of features_with_frames
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages, c_in = [], widths[0]
        radius, jump = 1, 1  # receptive-field radius (input frames) and current stride
        for i, (width, n_blocks) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n_blocks):
                layers.append(BasicBlock(c_in, width, stride if j == 0 else 1))
                c_in = width
            stages.append(nn.Sequential(*layers))
            radius += jump  # the (possibly strided) first convolution of the stage
            jump *= stride
            radius += jump * (2 * n_blocks - 1)
        self.stages = nn.Sequential(*stages)
        self.context_frames = self.frame_hop * math.ceil(radius / self.frame_hop)
        f_out = self.n_mels
        for _ in range(len(widths) - 1):
            f_out = (f_out + 1) // 2
        self.head = nn.Sequential(nn.Linear(f_out * widths[-1], d), nn.ReLU())

    def n_frames(self, t: int) -> int:
        """Number of output frames for ``t`` input frames."""
        return math.ceil(t / self.frame_hop)

    def frame_features(self, x: Tensor) -> Tensor:
        """``[B, 1, F, T] -> [B, ceil(T / frame_hop), d]``."""
        _check_input(x, self.n_mels, type(self).__name__)
        return self._frames(self.stages(self.stem(x)))

    def features_with_frames(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, 1, F, T] -> (h [B, d], fine [B, ceil(T / 2), widths[0]])`` in one pass: the
        clip features and the first stage's output averaged over frequency and over pairs
        of frames (20 ms per frame), for the inverse model with ``inverse_input=frames``."""
        _check_input(x, self.n_mels, type(self).__name__)
        early = self.stages[0](self.stem(x))  # [B, C0, F, T]
        h = self.pool(self._frames(self.stages[1:](early)))
        fine = F.avg_pool1d(early.mean(dim=2), 2, ceil_mode=True)  # [B, C0, ceil(T / 2)]
        return h, fine.transpose(1, 2)

    def _frames(self, x: Tensor) -> Tensor:
        x = x.permute(0, 3, 2, 1)  # [B, C, F', T'] -> [B, T', F', C]
        b, t, f, c = x.shape
        return self.head(x.reshape(b, t, f * c))

    def pool(self, frames: Tensor) -> Tensor:
        """``[B, T', d] -> [B, d]``: the clip feature of frame features (max + mean)."""
        return pool_frames(frames)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 1, F, T] -> [B, d]``."""
        return self.pool(self.frame_features(x))


ENCODERS: dict[str, type[nn.Module]] = {"audiontt": AudioNTT2020, "resnet": AudioResNet}


def build_encoder(name: str, **kwargs: Any) -> nn.Module:
    """Build an encoder by name (``audiontt`` or ``resnet``) with constructor ``kwargs``."""
    if name not in ENCODERS:
        raise ValueError(f"unknown audio encoder {name!r}; allowed: {', '.join(ENCODERS)}")
    cls = ENCODERS[name]
    allowed = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    unknown = [k for k in kwargs if k not in allowed]
    if unknown:
        raise ValueError(
            f"encoder {name!r}: unknown argument(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}"
        )
    return cls(**kwargs)


def encoder_spec(encoder: nn.Module) -> dict[str, Any]:
    """``{"name", "kwargs"}`` of an encoder built here, as stored in an export's meta."""
    name = getattr(encoder, "name", None)
    if name not in ENCODERS or not isinstance(getattr(encoder, "kwargs", None), dict):
        raise ValueError(
            f"{type(encoder).__name__} is not one of the audio encoders {list(ENCODERS)}"
        )
    return {"name": name, "kwargs": dict(encoder.kwargs)}
