"""A procedurally generated sound-event set in the exact ESC-50 layout, for demos and tests.

``ensure_demo_dataset()`` writes ``audio/*.wav`` and ``meta/esc50.csv`` (columns
``filename,fold,target,category,esc10,src_file,take``, file names
``{fold}-{src_file}-A-{target}.wav``) once and reuses them, so every tool that reads
ESC-50 runs on it unchanged, without a download. ``meta/strong.tsv`` holds the strong
labels of the short events (``filename, onset, offset, event_label``, tab-separated, in
seconds: the DESED layout), for sound event detection.

Decisions:

- 10 classes, 5 s clips at 16 kHz, 16-bit PCM (160 kB a clip; 400 clips = 64 MB by
  default). Seven classes fill much of the clip (harmonic tone, up/down chirp, noise
  bursts, click train, AM tone, FM tone); three are SHORT events (0.15-0.4 s) at a random
  time in 5 s of background noise (knock, short chirp, beep), which is where random crops
  miss the event, as in ESC-50.
- Every clip draws its pitch, timing, duration, level and background (noise colour and
  signal-to-noise ratio) from its own generator seeded by ``(SEED, class, clip)``, so the
  files are byte-identical across runs and independent of generation order.
- Beyond the class, the metadata holds two label sets of the same clips that the
  generator knows and that an augmentation changes: ``pitch_register`` (bands of 6
  semitones above 110 Hz for the sounds with one pitch: harmonic tone, AM and FM tones,
  knock, beep; empty for the others) and ``loudness_band`` (the sound's peak level in
  bands of 3 dB). They are what an encoder that became invariant to pitch shifts or gains
  loses, and what the efference copy should keep (``data.labels``).
- Strong labels: the generator reports where it placed each SHORT event
  (:attr:`ClipFacts.event`): the beep's and the short chirp's gate (fades included), and
  for the knocks, from the first knock's start until the last one has decayed by 20 dB
  (``tau * ln 10``). The long classes have no strong labels: their clips are the
  detection's event-free clips.
- Each class is spread evenly over the 5 folds (clip ``k`` goes to fold ``k % 5 + 1``);
  the first five classes are marked ``esc10 = True``, which makes a 5-class subset.
- The set is written to a temporary folder and renamed into place, so an interrupted or
  concurrent first use never leaves a half-written set behind.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from stec_audio.data.io import stec_cache_dir

SEED = 20221128
#: ESC-50's columns, then the demo's further label sets of the same clips (empty = the
#: clip's sound has no single pitch).
LABEL_COLUMNS = ("pitch_register", "loudness_band")
HEADER = "filename,fold,target,category,esc10,src_file,take," + ",".join(LABEL_COLUMNS) + "\n"
VERSION = 3  # 2: the metadata gained pitch_register and loudness_band; 3: meta/strong.tsv
STRONG_HEADER = "filename\tonset\toffset\tevent_label\n"
SAMPLE_RATE = 16000
CLIP_SECONDS = 5.0
N_FOLDS = 5

_N = int(SAMPLE_RATE * CLIP_SECONDS)
_T = np.arange(_N) / SAMPLE_RATE


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _span(rng: np.random.Generator, min_s: float, max_s: float) -> tuple[float, float]:
    """A random ``(start, duration)`` in seconds that fits in the clip."""
    dur = rng.uniform(min_s, max_s)
    return rng.uniform(0.0, CLIP_SECONDS - dur), dur


def _envelope(start: float, dur: float, fade_s: float = 0.02) -> np.ndarray:
    """``[N]``: 1 from ``start`` for ``dur`` seconds, raised-cosine fades, 0 elsewhere."""
    fade = min(fade_s, dur / 2)
    ramp = np.clip(np.minimum(_T - start, start + dur - _T) / fade, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * ramp)


def _gate(rng: np.random.Generator, min_s: float, max_s: float, fade_s: float = 0.02) -> np.ndarray:
    return _envelope(*_span(rng, min_s, max_s), fade_s)


def _sweep(f0: float, ratio: float, start: float, dur: float, fade_s: float) -> np.ndarray:
    """``[N]``: exponential sweep from ``f0`` to ``f0 * ratio`` Hz over ``[start, start + dur]``."""
    k = np.log(ratio) / dur
    t = np.clip(_T - start, 0.0, dur)
    return np.sin(2 * np.pi * f0 * np.expm1(k * t) / k) * _envelope(start, dur, fade_s)


def _band_noise(rng: np.random.Generator, centre: float, octaves: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(_N))
    f = np.fft.rfftfreq(_N, 1 / SAMPLE_RATE)
    lo, hi = centre * 2 ** (-octaves / 2), centre * 2 ** (octaves / 2)
    return np.fft.irfft(spec * ((f >= lo) & (f <= hi)), _N)


def _harmonic_tone(rng: np.random.Generator) -> np.ndarray:
    f0 = _log_uniform(rng, 110, 880)
    h = np.arange(1, rng.integers(3, 9) + 1)[:, None]
    h = h[h[:, 0] * f0 < SAMPLE_RATE / 2 - 500]
    amps = h ** -rng.uniform(0.5, 2.0)
    tone = (amps * np.sin(2 * np.pi * f0 * h * _T + rng.uniform(0, 2 * np.pi, h.shape))).sum(0)
    return tone * _gate(rng, 2.5, 5.0), f0, None


def _chirp(rng: np.random.Generator, up: bool) -> np.ndarray:
    f0, ratio = _log_uniform(rng, 200, 800), rng.uniform(2, 8)
    if not up:
        f0, ratio = f0 * ratio, 1 / ratio
    return _sweep(f0, ratio, *_span(rng, 1.5, 4.0), fade_s=0.02), None, None  # no single pitch


def _noise_bursts(rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(_N)
    for _ in range(rng.integers(2, 6)):
        band = _band_noise(rng, _log_uniform(rng, 300, 5000), rng.uniform(0.5, 1.5))
        out += band / (band.std() + 1e-9) * _gate(rng, 0.1, 0.6, 0.01)
    return out, None, None


def _click_train(rng: np.random.Generator) -> np.ndarray:
    rate, span = _log_uniform(rng, 4, 30), _gate(rng, 1.5, 4.0, 0.001)
    times = np.arange(0, CLIP_SECONDS, 1 / rate) + rng.uniform(0, 1 / rate)
    times = times + rng.normal(0, 0.002, times.shape)
    # One decaying broadband click (3 ms) added at every onset by a sparse impulse train.
    idx = np.clip(np.round(times * SAMPLE_RATE).astype(int), 0, _N - 1)
    impulses = np.zeros(_N)
    impulses[idx] = 1.0
    n_click = int(0.003 * SAMPLE_RATE)
    click = rng.standard_normal(n_click) * np.exp(-np.arange(n_click) / (0.0006 * SAMPLE_RATE))
    return np.convolve(impulses, click)[:_N] * span, None, None


def _am_tone(rng: np.random.Generator) -> np.ndarray:
    fc, fm, depth = _log_uniform(rng, 200, 2000), rng.uniform(2, 12), rng.uniform(0.6, 1.0)
    env = 1 - depth * 0.5 * (1 + np.cos(2 * np.pi * fm * _T + rng.uniform(0, 2 * np.pi)))
    return np.sin(2 * np.pi * fc * _T) * env * _gate(rng, 2.0, 5.0), fc, None


def _fm_tone(rng: np.random.Generator) -> np.ndarray:
    fc, fm, depth = _log_uniform(rng, 300, 2000), rng.uniform(3, 10), rng.uniform(0.03, 0.15)
    phase = 2 * np.pi * fc * _T + depth * fc / fm * np.sin(2 * np.pi * fm * _T)
    return np.sin(phase) * _gate(rng, 2.0, 5.0), fc, None


def _knock(rng: np.random.Generator) -> np.ndarray:
    # 2-3 knocks within 0.3 s, each a damped resonance with two inharmonic modes.
    onset = rng.uniform(0.05, CLIP_SECONDS - 0.4)
    f1, tau = _log_uniform(rng, 150, 600), rng.uniform(0.01, 0.04)
    out = np.zeros(_N)
    last = onset
    for j in range(rng.integers(2, 4)):
        last = onset + j * rng.uniform(0.08, 0.12)
        t = _T - last
        on = t >= 0
        decay = np.exp(-np.where(on, t, 0) / tau) * on
        out += decay * (np.sin(2 * np.pi * f1 * t) + 0.5 * np.sin(2 * np.pi * 2.3 * f1 * t))
    return out, f1, (onset, min(last + tau * np.log(10.0), CLIP_SECONDS))  # until -20 dB


def _chirp_event(rng: np.random.Generator) -> np.ndarray:
    f0, ratio = _log_uniform(rng, 1000, 2500), rng.uniform(1.5, 3)
    start, dur = _span(rng, 0.2, 0.4)
    return _sweep(f0, ratio, start, dur, fade_s=0.01), None, (start, start + dur)


def _beep_event(rng: np.random.Generator) -> np.ndarray:
    f = _log_uniform(rng, 500, 3000)
    start, dur = _span(rng, 0.15, 0.4)
    return np.sin(2 * np.pi * f * _T) * _envelope(start, dur, 0.005), f, (start, start + dur)


#: A generator's result: the signal ``[N]``, its pitch in Hz (None: no single pitch) and,
#: for a short event, its ``(onset, offset)`` in seconds.
Generated = tuple[np.ndarray, float | None, tuple[float, float] | None]
#: (category, generator, is a short event). The category order defines the targets.
CLASSES: list[tuple[str, Callable[[np.random.Generator], Generated], bool]] = [
    ("harmonic_tone", _harmonic_tone, False),
    ("chirp_up", lambda rng: _chirp(rng, True), False),
    ("chirp_down", lambda rng: _chirp(rng, False), False),
    ("noise_bursts", _noise_bursts, False),
    ("click_train", _click_train, False),
    ("am_tone", _am_tone, False),
    ("fm_tone", _fm_tone, False),
    ("knock_event", _knock, True),
    ("chirp_event", _chirp_event, True),
    ("beep_event", _beep_event, True),
]


def _background(rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise ``[N]`` with a random spectral tilt (white to brown-ish)."""
    spec = np.fft.rfft(rng.standard_normal(_N))
    f = np.fft.rfftfreq(_N, 1 / SAMPLE_RATE)
    noise = np.fft.irfft(spec / np.maximum(f, 20.0) ** rng.uniform(0.0, 1.0), _N)
    return noise / noise.std()


@dataclass(frozen=True)
class ClipFacts:
    """What the generator knows about a clip beyond its class.

    Attributes:
        pitch_hz: the fundamental (harmonic tone), carrier (AM/FM tones), tone (beep) or
            first resonance (knock) in Hz; None for sounds without one pitch (sweeps,
            noise, clicks).
        level_db: the sound's peak level in dBFS before the background is added (the
            background follows it at the drawn signal-to-noise ratio, so the whole clip
            is that much louder or quieter).
        event: ``(onset, offset)`` in seconds of a short event (knock, short chirp, beep);
            None for the sounds that fill much of the clip.
    """

    pitch_hz: float | None
    level_db: float
    event: tuple[float, float] | None = None

    @property
    def pitch_register(self) -> int:
        """Band of 6 semitones above 110 Hz (0 = 110-156 Hz, ..., 9 = 2.5-3.5 kHz); -1 when
        the sound has no single pitch."""
        if self.pitch_hz is None:
            return -1
        return int(np.clip(np.floor(12 * np.log2(self.pitch_hz / 110.0) / 6), 0, 9))

    @property
    def loudness_band(self) -> int:
        """Band of 3 dB of the peak level: 0 = -18 to -15 dBFS, ..., 4 = -6 to -3 dBFS."""
        return int(np.clip(np.floor((self.level_db + 18.0) / 3.0), 0, 4))


def generate_clip(target: int, k: int, background: bool = True) -> tuple[np.ndarray, ClipFacts]:
    """Clip ``k`` of class ``target``: float32 ``[80000]`` (5 s at 16 kHz) in [-1, 1], and
    its :class:`ClipFacts`. ``background=False`` leaves out the noise (same signal)."""
    rng = np.random.default_rng([SEED, target, k])
    _, generate, event = CLASSES[target]
    sig, pitch, span = generate(rng)
    level_db = rng.uniform(-18, -3)
    sig = sig / (np.abs(sig).max() + 1e-12) * 10 ** (level_db / 20)
    # SNR against the signal's RMS over its active part, so short events stay audible.
    active = np.abs(sig) > 1e-3 * np.abs(sig).max()
    rms = np.sqrt(np.mean(sig[active] ** 2))
    snr_db = rng.uniform(8, 25) if event else rng.uniform(10, 35)
    wave = sig + _background(rng) * rms * 10 ** (-snr_db / 20) if background else sig
    event = None if span is None else (float(span[0]), float(span[1]))
    return np.clip(wave, -1.0, 1.0).astype(np.float32), ClipFacts(pitch, float(level_db), event)


def make_clip(target: int, k: int, background: bool = True) -> np.ndarray:
    """Clip ``k`` of class ``target`` (see :func:`generate_clip`)."""
    return generate_clip(target, k, background)[0]


def default_cache_dir() -> Path:
    """``$STEC_CACHE/demo_audio``, else ``~/.cache/stec/demo_audio``."""
    return stec_cache_dir("demo_audio")


def write_demo_dataset(root: str | os.PathLike, n_per_class: int = 40) -> None:
    """Write the demo set (ESC-50 layout, with ``meta/strong.tsv``) into the folder
    ``root`` (created)."""
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(exist_ok=True)
    rows, strong = [], []
    for target, (category, _, _) in enumerate(CLASSES):
        for k in range(n_per_class):
            fold, src = k % N_FOLDS + 1, 100000 + target * 1000 + k
            name = f"{fold}-{src}-A-{target}.wav"
            wave, facts = generate_clip(target, k)
            sf.write(root / "audio" / name, wave, SAMPLE_RATE, subtype="PCM_16")
            register = "" if facts.pitch_register < 0 else facts.pitch_register
            rows.append(
                f"{name},{fold},{target},{category},{target < 5},{src},A,"
                f"{register},{facts.loudness_band}\n"
            )
            if facts.event is not None:
                onset, offset = facts.event
                strong.append(f"{name}\t{onset:.3f}\t{offset:.3f}\t{category}\n")
    (root / "meta" / "strong.tsv").write_text(
        STRONG_HEADER + "".join(sorted(strong)), encoding="utf-8"
    )
    # esc50.csv last: its presence marks a complete set (see write_atomically)
    (root / "meta" / "esc50.csv").write_text(HEADER + "".join(sorted(rows)), encoding="utf-8")


def ensure_demo_dataset(cache_dir: str | os.PathLike | None = None, n_per_class: int = 40) -> Path:
    """The demo set's root (``audio/``, ``meta/esc50.csv``, ``meta/strong.tsv``),
    generated on first use.

    The set lives in ``cache_dir / f"esc_demo_v{VERSION}_n{n_per_class}"`` (default
    ``cache_dir``: :func:`default_cache_dir`); read it with
    :func:`stec_audio.data.datasets.esc50_entries`.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = base / f"esc_demo_v{VERSION}_n{n_per_class}"
    return write_atomically(root, lambda folder: write_demo_dataset(folder, n_per_class))


def write_atomically(root: Path, write: Callable[[Path], None]) -> Path:
    """``root`` once it holds ``meta/esc50.csv``: made by ``write(folder)`` in a temporary
    folder that is then renamed into place, so an interrupted or concurrent first use
    never leaves a half-written set behind."""
    if (root / "meta" / "esc50.csv").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    # a unique name made with mkdir, not mkdtemp: the set keeps the umask's permissions
    tmp = root.parent / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        write(tmp)
        try:
            os.rename(tmp, root)
        except OSError:
            # Another process finished first (the target now exists and is not empty).
            if not (root / "meta" / "esc50.csv").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
