from __future__ import annotations

import os

import numpy as np
import soundfile as sf

from stec_audio.data.datasets import esc50_entries
from stec_audio.data.demo import CLASSES, SAMPLE_RATE, ensure_demo_dataset, make_clip

from .conftest import file_bytes


def test_demo_set_is_byte_identical_and_in_esc50_layout(tmp_path):
    a = ensure_demo_dataset(tmp_path / "a", n_per_class=5)
    b = ensure_demo_dataset(tmp_path / "b", n_per_class=5)
    files_a, files_b = file_bytes(a), file_bytes(b)
    assert files_a == files_b
    assert len([f for f in files_a if f.startswith("audio/")]) == 5 * len(CLASSES)
    assert set(os.listdir(a)) == {"audio", "meta"}
    assert not [p for p in os.listdir(tmp_path / "a") if p.startswith(".tmp")]

    index = esc50_entries(a)
    assert len(index) == 5 * len(CLASSES) and not index.missing and len(CLASSES) >= 8
    assert index.class_names == [c[0] for c in CLASSES]
    targets, folds = index.targets(), index.folds
    for c in range(len(CLASSES)):  # every class spread evenly over the 5 folds
        assert sorted(folds[targets == c].tolist()) == [1, 2, 3, 4, 5]
    header = (a / "meta" / "esc50.csv").read_text().splitlines()[0]
    assert (
        header == "filename,fold,target,category,esc10,src_file,take,pitch_register,loudness_band"
    )
    for e in index.entries[:3]:
        fold, _, take, target = e.path.stem.split("-")
        assert (int(fold), int(target), take) == (e.fold, e.label, "A")
    info = sf.info(index.path(0))
    assert (info.samplerate, info.channels, info.subtype, info.duration) == (
        SAMPLE_RATE,
        1,
        "PCM_16",
        5.0,
    )


def test_demo_set_is_reused_not_regenerated(tmp_path, monkeypatch):
    root = ensure_demo_dataset(tmp_path, n_per_class=1)
    stamp = (root / "meta" / "esc50.csv").stat().st_mtime_ns
    monkeypatch.setattr("stec_audio.data.demo.write_demo_dataset", None)  # would crash if called
    assert ensure_demo_dataset(tmp_path, n_per_class=1) == root
    assert (root / "meta" / "esc50.csv").stat().st_mtime_ns == stamp


def test_default_location_follows_stec_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEC_CACHE", str(tmp_path))
    root = ensure_demo_dataset(n_per_class=1)
    assert root.parent == tmp_path / "demo_audio"


def test_short_event_classes_are_short_and_clips_vary():
    for target, (name, _, event) in enumerate(CLASSES):
        for k in range(3):
            clip = make_clip(target, k)
            assert clip.shape == (SAMPLE_RATE * 5,) and np.abs(clip).max() <= 1.0
            sig = make_clip(target, k, background=False)
            assert np.abs(clip - sig).max() > 0  # background noise added
            env = np.sqrt(np.convolve(sig**2, np.ones(400) / 400, "same"))
            on = np.flatnonzero(env > 0.1 * env.max())
            extent = (on[-1] - on[0]) / len(sig)  # share of the clip from first to last sound
            assert (extent < 0.12) if event else (extent > 0.2), (name, k, extent)
    assert not np.array_equal(make_clip(0, 0), make_clip(0, 1))
    assert np.array_equal(make_clip(3, 2), make_clip(3, 2))


def test_demo_metadata_holds_the_pitch_register_and_loudness_band_it_generated(tmp_path):
    from stec_audio.data.clip_index import add_label_columns
    from stec_audio.data.datasets import esc50_entries
    from stec_audio.data.demo import LABEL_COLUMNS, generate_clip

    root = ensure_demo_dataset(tmp_path, n_per_class=4)
    index = add_label_columns(
        esc50_entries(root), root / "meta" / "esc50.csv", "filename", LABEL_COLUMNS
    )
    assert set(index.tasks) == {"pitch_register", "loudness_band"}
    for i in range(len(index)):
        target, k = index.label(i), int(index.id(i).split("-")[1]) % 1000
        _, facts = generate_clip(target, k, background=False)
        assert index.tasks["pitch_register"][i] == facts.pitch_register
        assert index.tasks["loudness_band"][i] == facts.loudness_band
    names = [c[0] for c in CLASSES]
    pitched = {
        names[index.label(i)] for i in range(len(index)) if index.tasks["pitch_register"][i] >= 0
    }
    assert pitched == {"harmonic_tone", "am_tone", "fm_tone", "knock_event", "beep_event"}
    # a harmonic tone at 110 Hz is in register 0, at 880 Hz (3 octaves up) in register 6
    from stec_audio.data.demo import ClipFacts

    assert ClipFacts(110.0, -10).pitch_register == 0 and ClipFacts(880.0, -10).pitch_register == 6
    assert ClipFacts(None, -3.5).pitch_register == -1 and ClipFacts(None, -3.5).loudness_band == 4
    sub = index.subset([0, 5])
    assert sub.tasks["loudness_band"].tolist() == index.tasks["loudness_band"][[0, 5]].tolist()
