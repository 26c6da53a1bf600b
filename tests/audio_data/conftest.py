"""Generated audio fixtures in the real on-disk layouts (ESC-50, AudioSet), with bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# Files of the ESC-50-layout fixture: name -> (kind, target, expected skip reason or None).
# 10 usable files in many formats and rates, 6 unusable ones, 1 listed but absent.
GOOD = {
    "1-001-A-0.wav": "pcm16_44k",
    "1-002-A-1.wav": "pcm16_22k",
    "2-003-A-0.wav": "u8_16k",
    "2-004-A-1.wav": "pcm24_48k",
    "3-005-A-0.wav": "stereo_44k",
    "3-006-A-1.wav": "float_some_nan",
    "4-007-A-0.wav": "pcm32_16k",
    "4-008-A-1.wav": "half_second",
    "5-009-A-0.flac": "flac_16k",
    "5-010-A-1.ogg": "ogg_16k",
}
BAD = {
    "1-011-A-0.wav": ("corrupt", "cannot decode"),
    "2-012-A-1.wav": ("empty", "empty file"),
    "3-013-A-0.wav": ("zeros", "silent"),
    "4-014-A-1.wav": ("all_nan", "NaN"),
    "5-015-A-0.wav": ("too_short", "too short"),
    "5-016-A-1.wav": ("header_only", "no audio samples"),
}
ABSENT = "1-017-A-0.wav"
CATEGORIES = {0: "low_tone", 1: "high_tone"}


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_kind(path: Path, kind: str, freq: float) -> None:
    """Write one fixture file of the given kind."""
    if kind == "pcm16_44k":
        sf.write(path, tone(freq, 44100), 44100, subtype="PCM_16")
    elif kind == "pcm16_22k":
        sf.write(path, tone(freq, 22050), 22050, subtype="PCM_16")
    elif kind == "u8_16k":
        sf.write(path, tone(freq, 16000), 16000, subtype="PCM_U8")
    elif kind == "pcm24_48k":
        sf.write(path, tone(freq, 48000), 48000, subtype="PCM_24")
    elif kind == "stereo_44k":
        left = tone(freq, 44100)
        sf.write(path, np.stack([left, np.zeros_like(left)], 1), 44100, subtype="PCM_16")
    elif kind == "float_some_nan":
        x = tone(freq, 16000)
        x[::400] = np.nan  # 0.25% of the samples
        sf.write(path, x, 16000, subtype="FLOAT")
    elif kind == "pcm32_16k":
        sf.write(path, tone(freq, 16000), 16000, subtype="PCM_32")
    elif kind == "half_second":
        sf.write(path, tone(freq, 16000, 0.5), 16000, subtype="PCM_16")
    elif kind == "flac_16k":
        sf.write(path, tone(freq, 16000), 16000, format="FLAC", subtype="PCM_16")
    elif kind == "ogg_16k":
        sf.write(path, tone(freq, 16000), 16000, format="OGG", subtype="VORBIS")
    elif kind == "corrupt":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zeros":
        sf.write(path, np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    elif kind == "all_nan":
        sf.write(path, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    elif kind == "too_short":
        sf.write(path, tone(freq, 16000, 0.02), 16000, subtype="PCM_16")
    elif kind == "header_only":
        sf.write(path, np.zeros(0, np.float32), 16000, subtype="PCM_16")
    else:
        raise ValueError(kind)


def target_of(name: str) -> int:
    return int(Path(name).stem.split("-")[-1])


def make_esc50(root: Path, files: dict[str, str], listed_absent: list[str] = ()) -> Path:
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = []
    for name, kind in files.items():
        target = target_of(name)
        write_kind(root / "audio" / name, kind, 300.0 if target == 0 else 1200.0)
        rows.append(name)
    rows += list(listed_absent)
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for i, name in enumerate(sorted(rows)):
        t = target_of(name)
        lines.append(f"{name},{name[0]},{t},{CATEGORIES[t]},{t == 0},{1000 + i},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep default cache folders (demo set, AudioSet index) out of the home folder."""
    monkeypatch.setenv("STEC_CACHE", str(tmp_path_factory.getbasetemp() / "stec_cache"))


@pytest.fixture(scope="session")
def esc50_dir(tmp_path_factory) -> Path:
    """ESC-50 layout with good files in many formats, bad files and one absent file."""
    files = dict(GOOD)
    files.update({name: kind for name, (kind, _) in BAD.items()})
    return make_esc50(tmp_path_factory.mktemp("esc50"), files, [ABSENT])


@pytest.fixture(scope="session")
def mostly_bad_dir(tmp_path_factory) -> Path:
    """ESC-50 layout where 24 of 30 files are undecodable."""
    files = {f"{1 + i % 5}-{i:03d}-A-{i % 2}.wav": "corrupt" for i in range(24)}
    files.update({f"{1 + i % 5}-{i:03d}-A-{i % 2}.wav": "pcm16_44k" for i in range(24, 30)})
    return make_esc50(tmp_path_factory.mktemp("bad_esc50"), files)


def file_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out
