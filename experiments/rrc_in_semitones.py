"""What BYOL-A's random resize crop does to pitch: its scaling of the mel axis in semitones.

The separate pipeline's RRC (``augment=separate``) zooms the mel axis by ``h ~ U(0.6, 1.5)``
(clipped to 1 by the frequency canvas of 1.0, so 44% of views are not zoomed) about a
centre ``c ~ U(-(1 - h), 1 - h)`` in normalised mel coordinates. Through the front end's
mel <-> Hz mapping this is, at each frequency, a pitch shift and a scaling of musical
intervals. The script draws 20,000 crops and prints, at 250 Hz to 4 kHz, the 5th, 50th
and 95th percentile of the pitch shift (semitones) and of the interval scale (source
semitones per view semitone).

    python experiments/rrc_in_semitones.py
"""

from __future__ import annotations

import torch

from stec_audio.augment.pitch import hz_to_mel, mel_to_hz

N_MELS, F_MIN, F_MAX = 64, 60.0, 7800.0


def main() -> dict[float, dict[str, list[float]]]:
    m_min, m_max = (float(hz_to_mel(torch.tensor(f))) for f in (F_MIN, F_MAX))
    step = (m_max - m_min) / (N_MELS + 1)
    first = m_min + step

    def y_of_hz(f: torch.Tensor) -> torch.Tensor:  # normalised mel coordinate [-1, 1]
        return (2 * (hz_to_mel(f) - first) / step + 1) / N_MELS - 1

    def hz_of_y(y: torch.Tensor) -> torch.Tensor:
        return mel_to_hz(first + ((y + 1) * N_MELS - 1) / 2 * step)

    gen = torch.Generator().manual_seed(0)
    h = (0.6 + 0.9 * torch.rand(20000, generator=gen)).clamp(max=1.0)
    c = (torch.rand(20000, generator=gen) * 2 - 1) * (1 - h)
    quantiles = torch.tensor([0.05, 0.5, 0.95])
    out = {}
    for hz in (250.0, 500.0, 1000.0, 2000.0, 4000.0):
        f = torch.tensor([hz, hz * 2 ** (1 / 12)])
        source = hz_of_y(h[:, None] * y_of_hz(f)[None, :] + c[:, None])  # [N, 2]
        shift = 12 * torch.log2(source[:, 0] / hz)
        interval = 12 * torch.log2(source[:, 1] / source[:, 0])
        out[hz] = {
            "shift": torch.quantile(shift, quantiles).tolist(),
            "interval_scale": torch.quantile(interval, quantiles).tolist(),
        }
        print(
            f"{hz:6.0f} Hz: pitch shift {' / '.join(f'{v:+.1f}' for v in out[hz]['shift'])} "
            f"semitones, interval scale {' / '.join(f'{v:.2f}' for v in out[hz]['interval_scale'])}"
            " (5th / 50th / 95th percentile)"
        )
    return out


if __name__ == "__main__":
    main()
