"""Pitch shift in semitones, exact on the log-mel frequency axis.

Shifting a sound by ``s`` semitones multiplies every frequency by ``r = 2^(s/12)``. On the
mel axis that is a frequency-dependent warp, not a constant bin shift (the mel scale is
nearly linear below 700 Hz and nearly logarithmic above): output bin ``k``, whose centre
frequency is ``f_k``, takes what the input held at ``f_k / r``, found through the
mel <-> Hz mapping of the front end and read by linear interpolation between mel bins.
Bins whose source frequency falls outside the front end's band get ``fill``.

Compare :class:`~stec_audio.augment.spectral.FrequencyShift`, which moves the content by a
number of mel bins (the same number of bins at every frequency).
"""

from __future__ import annotations

import torch
from torch import Tensor

from stec.actions import ActionComponent, Continuous, ViewParams
from stec.augment import Augmenter
from stec_audio.augment.ops import (
    check_fill,
    check_spectrogram,
    keep_where,
    resample_axis,
    uniform,
)


def hz_to_mel(f: Tensor) -> Tensor:
    """HTK mel scale (torchaudio's default): ``2595 log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_axis(n_mels: int, f_min: float, f_max: float) -> tuple[float, float, Tensor]:
    """The front end's mel axis: ``(mel of bin 0's centre, mel step between bins, [F]
    float64 centre frequencies in Hz)`` of ``n_mels`` triangular filters equally spaced in
    HTK mel between ``f_min`` and ``f_max`` (their edges; bin ``k`` is centred at step
    ``k + 1``)."""
    m_min = hz_to_mel(torch.tensor(float(f_min), dtype=torch.float64))
    m_max = hz_to_mel(torch.tensor(float(f_max), dtype=torch.float64))
    step = float((m_max - m_min) / (n_mels + 1))
    first = float(m_min) + step
    return first, step, mel_to_hz(first + step * torch.arange(int(n_mels)).double())


class PitchShift(Augmenter):
    """Shift the pitch of log-mels ``[B, C, F, T]`` by ``s ~ U(-max_semitones, max_semitones)``.

    The mel axis must be the one the front end made: ``n_mels`` triangular filters with
    centres equally spaced in HTK mel between ``f_min`` and ``f_max`` (the defaults are
    BYOL-A's front end). ``fill`` (0 = the dataset mean after normalisation, or ``"edge"``)
    goes where the shifted content leaves the band.

    Recorded parameter (``[B, 1]``): ``s`` in semitones; the relative action
    ``s_b - s_a`` is a ``Continuous(relation="difference")`` over ``±2 max_semitones``.
    Untouched views record 0 and are returned unchanged.
    """

    def __init__(
        self,
        max_semitones: float = 4.0,
        p: float = 1.0,
        n_mels: int = 64,
        f_min: float = 60.0,
        f_max: float = 7800.0,
        fill: float | str = 0.0,
        n_bins: int = 6,
        name: str = "pitch",
    ) -> None:
        super().__init__(p)
        who = type(self).__name__
        if not max_semitones > 0:
            raise ValueError(f"{who}: max_semitones must be > 0, got {max_semitones}")
        if int(n_mels) != n_mels or n_mels < 2 or not 0 <= f_min < f_max:
            raise ValueError(
                f"{who}: need n_mels >= 2 and 0 <= f_min < f_max, got {n_mels}, {f_min}, {f_max}"
            )
        self.max_semitones, self.fill = float(max_semitones), check_fill(who, fill)
        self.mel_first, self.mel_step, centres = mel_axis(n_mels, f_min, f_max)
        self.register_buffer("centres_hz", centres.float(), persistent=False)
        span = 2 * self.max_semitones
        self.component = Continuous(name, -span, span, n_bins=n_bins, relation="difference")

    def components(self) -> list[ActionComponent]:
        return [self.component]

    def source_positions(self, semitones: Tensor) -> Tensor:
        """``[B]`` shifts -> ``[B, F]`` fractional input bins read by each output bin."""
        ratio = torch.exp2(semitones / 12.0)
        source_hz = self.centres_hz[None, :] / ratio[:, None]
        return (hz_to_mel(source_hz) - self.mel_first) / self.mel_step

    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        """``[B, C, F, T] -> ([B, C, F, T], {name: [B, 1] shift in semitones})``."""
        check_spectrogram(x, type(self).__name__)
        if x.shape[2] != self.centres_hz.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: built for {self.centres_hz.shape[0]} mel bins, got "
                f"{x.shape[2]}"
            )
        b = x.shape[0]
        applied = self.applied(b, x.device)
        s = uniform(b, -self.max_semitones, self.max_semitones, x.device)
        s = torch.where(applied, s, torch.zeros_like(s))
        out = resample_axis(x, self.source_positions(s).to(x.dtype), dim=2, fill=self.fill)
        if self.p < 1.0:
            out = keep_where(applied, out, x)  # untouched examples stay bit-exact
        return out, {self.component.name: s.unsqueeze(1)}
