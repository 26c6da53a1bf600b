"""A second built-in sound set, of another kind than the demo: instrument phrases in rooms.

``ensure_notes_dataset()`` writes ``audio/*.wav`` and ``meta/esc50.csv`` in the ESC-50
layout, like :mod:`stec_audio.data.demo`, but everything that makes a clip comes from another
process, so that settings tuned on the demo can be confirmed on data they never saw:

- **Sources**: 8 instrument families synthesised by their own models: a plucked string
  (Karplus-Strong), a bowed string (band-limited sawtooth with vibrato and a slow attack),
  brass (harmonics that brighten with level), a reed (odd harmonics), a flute (two
  partials and breath noise), an organ (sustained drawbar partials), a bell (inharmonic
  partials 1 : 2.76 : 5.40 : 8.93) and a mallet (partials 1 : 3.9 : 9.9, fast decay).
- **Events**: a phrase of 1-6 notes (0.15-1.2 s each, with gaps) within two semitones of
  the phrase's centre pitch, starting at a random time; a phrase may be short in a long
  clip or fill it.
- **Background**: the phrase is played in a room (exponentially decaying noise reverb,
  RT60 0.2-1.2 s) over babble (4-8 formant-filtered noise voices with a syllable rhythm)
  and, in a third of the clips, mains hum, at 5-25 dB signal-to-noise ratio.
- **Format**: 5 s mono 16-bit WAV at 22.05 kHz (the front end resamples it).

Labels: ``target`` is the instrument family; ``pitch_register`` the band of 6 semitones of
the phrase's centre pitch above 110 Hz (0-7, up to 1.76 kHz) and ``loudness_band`` the
phrase's peak level in bands of 3 dB (0-4), as in the demo set. Clips are seeded by
``(SEED, class, clip)``: byte-identical on every machine and in any order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from stec_audio.data.demo import HEADER, N_FOLDS, ClipFacts, write_atomically
from stec_audio.data.io import stec_cache_dir

SEED = 20260611
VERSION = 1
SAMPLE_RATE = 22050
CLIP_SECONDS = 5.0
_N = int(SAMPLE_RATE * CLIP_SECONDS)


def _pluck(rng: np.random.Generator, f: float, n: int) -> np.ndarray:
    """Karplus-Strong: a noise burst circulating in a delay line with an averaging filter."""
    period = max(int(round(SAMPLE_RATE / f)), 2)
    buf = rng.uniform(-1, 1, period)
    out = np.empty(n)
    decay = rng.uniform(0.990, 0.998)
    for start in range(0, n, period):  # one period at a time: the filter reads the last one
        block = buf[: min(period, n - start)]
        out[start : start + len(block)] = block
        buf = decay * 0.5 * (buf + np.roll(buf, -1))
    return out


def _harmonics(
    f: float, n: int, amps: np.ndarray, vibrato: float = 0.0, rate: float = 5.0
) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    phase = 2 * np.pi * f * t + vibrato / rate * np.sin(2 * np.pi * rate * t)
    out = np.zeros(n)
    for h, a in enumerate(amps, start=1):
        if f * h < SAMPLE_RATE / 2 - 500:
            out += a * np.sin(h * phase)
    return out


def _envelope(n: int, attack: float, release: float, decay: float = 0.0) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    env = np.minimum(1.0, t / max(attack, 1e-3)) * np.exp(-decay * t)
    tail = np.clip((n / SAMPLE_RATE - t) / max(release, 1e-3), 0.0, 1.0)
    return env * tail


def _bowed(rng, f, n):
    amps = 1.0 / np.arange(1, 16)
    return _harmonics(f, n, amps, vibrato=0.006 * f, rate=rng.uniform(4, 7)) * _envelope(
        n, 0.12, 0.1
    )


def _brass(rng, f, n):
    bright = rng.uniform(0.5, 0.9)
    amps = bright ** np.arange(12)
    return _harmonics(f, n, amps) * _envelope(n, 0.05, 0.08)


def _reed(rng, f, n):
    amps = np.array([1.0 / h if h % 2 else 0.05 / h for h in range(1, 14)])
    return _harmonics(f, n, amps, vibrato=0.002 * f) * _envelope(n, 0.03, 0.05)


def _flute(rng, f, n):
    tone = _harmonics(f, n, np.array([1.0, 0.25, 0.08]), vibrato=0.004 * f)
    breath = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same") * 0.08
    return (tone + breath) * _envelope(n, 0.08, 0.08)


def _organ(rng, f, n):
    amps = np.array([1.0, 0.8, 0.0, 0.6, 0.0, 0.3, 0.0, 0.4])
    return _harmonics(f, n, amps) * _envelope(n, 0.01, 0.02)


def _partials(f, n, ratios, decays):
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n)
    for k, (r, d) in enumerate(zip(ratios, decays, strict=True)):
        if f * r < SAMPLE_RATE / 2 - 500:
            out += np.sin(2 * np.pi * f * r * t) * np.exp(-d * t) / (k + 1)
    return out * _envelope(n, 0.002, 0.01)


def _bell(rng, f, n):
    return _partials(f, n, (1.0, 2.76, 5.40, 8.93), (1.5, 2.5, 4.0, 6.0))


def _mallet(rng, f, n):
    return _partials(f, n, (1.0, 3.9, 9.9), (6.0, 14.0, 30.0))


def _plucked(rng, f, n):
    return _pluck(rng, f, n) * _envelope(n, 0.002, 0.02)


#: (family, note synthesiser). The order defines the targets.
FAMILIES: list[tuple[str, Callable[[np.random.Generator, float, int], np.ndarray]]] = [
    ("plucked_string", _plucked),
    ("bowed_string", _bowed),
    ("brass", _brass),
    ("reed", _reed),
    ("flute", _flute),
    ("organ", _organ),
    ("bell", _bell),
    ("mallet", _mallet),
]


def _phrase(rng: np.random.Generator, play, centre_hz: float) -> np.ndarray:
    out = np.zeros(_N)
    t = rng.uniform(0.0, 3.5)
    for _ in range(rng.integers(1, 7)):
        dur = rng.uniform(0.15, 1.2)
        n = int(min(dur, CLIP_SECONDS - t) * SAMPLE_RATE)
        if n < int(0.05 * SAMPLE_RATE):
            break
        f = centre_hz * 2 ** (rng.integers(-2, 3) / 12)
        start = int(t * SAMPLE_RATE)
        out[start : start + n] += play(rng, f, n)
        t += dur + rng.uniform(0.0, 0.3)
    return out


def _room(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    rt60 = rng.uniform(0.2, 1.2)
    n = int(rt60 * SAMPLE_RATE)
    ir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    ir[0] = 1.0 / rng.uniform(0.3, 1.0)  # the direct sound, against the diffuse tail
    size = 1 << int(np.ceil(np.log2(len(x) + n)))
    wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: len(x)]
    return wet / (np.abs(wet).max() + 1e-12) * np.abs(x).max()


def _babble(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(_N) / SAMPLE_RATE
    f = np.fft.rfftfreq(_N, 1 / SAMPLE_RATE)
    out = np.zeros(_N)
    for _ in range(rng.integers(4, 9)):
        spec = np.fft.rfft(rng.standard_normal(_N))
        shape = np.zeros_like(f)
        for formant in (rng.uniform(300, 900), rng.uniform(900, 2500), rng.uniform(2500, 3500)):
            shape += np.exp(-0.5 * ((f - formant) / (0.1 * formant)) ** 2)
        voice = np.fft.irfft(spec * shape, _N)
        syllables = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6.3))
        out += voice / (voice.std() + 1e-12) * syllables**2
    if rng.random() < 1 / 3:  # mains hum
        mains = 50.0 if rng.random() < 0.5 else 60.0
        out += sum(np.sin(2 * np.pi * mains * h * t) / h for h in (1, 2, 3)) * 0.5
    return out / (out.std() + 1e-12)


def generate_note_clip(target: int, k: int) -> tuple[np.ndarray, int, int]:
    """Clip ``k`` of family ``target``: float32 ``[110250]`` in [-1, 1], its pitch
    register and its loudness band."""
    rng = np.random.default_rng([SEED, target, k])
    centre_semitones = rng.uniform(0.0, 48.0)  # above 110 Hz
    phrase = _phrase(rng, FAMILIES[target][1], 110.0 * 2 ** (centre_semitones / 12))
    level_db = rng.uniform(-18, -3)
    phrase = _room(rng, phrase / (np.abs(phrase).max() + 1e-12) * 10 ** (level_db / 20))
    active = np.abs(phrase) > 1e-3 * np.abs(phrase).max()
    rms = np.sqrt(np.mean(phrase[active] ** 2))
    noise = _babble(rng) * rms * 10 ** (-rng.uniform(5, 25) / 20)
    wave = np.clip(phrase + noise, -1.0, 1.0).astype(np.float32)
    register = int(min(centre_semitones // 6, 7))
    return wave, register, ClipFacts(None, float(level_db)).loudness_band


def write_notes_dataset(root: str | os.PathLike, n_per_class: int = 40) -> None:
    """Write the set (ESC-50 layout) into the folder ``root`` (created)."""
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(exist_ok=True)
    rows = []
    for target, (family, _) in enumerate(FAMILIES):
        for k in range(n_per_class):
            fold, src = k % N_FOLDS + 1, 200000 + target * 1000 + k
            name = f"{fold}-{src}-A-{target}.wav"
            wave, register, loudness = generate_note_clip(target, k)
            sf.write(root / "audio" / name, wave, SAMPLE_RATE, subtype="PCM_16")
            rows.append(
                f"{name},{fold},{target},{family},{target < 4},{src},A,{register},{loudness}\n"
            )
    (root / "meta" / "esc50.csv").write_text(HEADER + "".join(sorted(rows)), encoding="utf-8")


def ensure_notes_dataset(cache_dir: str | os.PathLike | None = None, n_per_class: int = 40) -> Path:
    """The set's root (``audio/``, ``meta/esc50.csv``), generated on first use."""
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    base = Path(cache_dir) if cache_dir is not None else stec_cache_dir("notes_audio")
    root = base / f"notes_v{VERSION}_n{n_per_class}"
    return write_atomically(root, lambda folder: write_notes_dataset(folder, n_per_class))
