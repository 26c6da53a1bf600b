from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from stec_audio.data.io import (
    AudioError,
    BadFileLog,
    TooManyBadFiles,
    clip_problem,
    fit_length,
    load_audio,
)

from .conftest import BAD, GOOD, tone


def dominant_freq(wave: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spec.argmax()])


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_files_load_as_16k_mono_float32(esc50_dir, name):
    wave = load_audio(esc50_dir / "audio" / name, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    seconds = 0.5 if GOOD[name] == "half_second" else 1.0
    assert abs(len(wave) - 16000 * seconds) <= 1
    assert np.isfinite(wave).all()
    freq = 300.0 if name.endswith("0.wav") or name.endswith("0.flac") else 1200.0
    assert abs(dominant_freq(wave, 16000) - freq) < 5
    # Integer formats are scaled to [-1, 1]; the stereo file averages a 0.5 tone with silence.
    peak = 0.25 if GOOD[name] == "stereo_44k" else 0.5
    assert abs(np.abs(wave).max() - peak) < 0.06


@pytest.mark.parametrize(
    "name", sorted(n for n, (k, _) in BAD.items() if k not in ("zeros", "too_short"))
)
def test_bad_files_raise_audio_error_naming_file_and_reason(esc50_dir, name):
    with pytest.raises(AudioError) as info:
        load_audio(esc50_dir / "audio" / name)
    assert info.value.path.endswith(name)
    assert BAD[name][1] in info.value.reason
    assert name in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="file not found"):
        load_audio(tmp_path / "nope.wav")


def test_silent_and_short_files_load_but_are_flagged(esc50_dir):
    zeros = load_audio(esc50_dir / "audio" / "3-013-A-0.wav")
    assert zeros.shape == (16000,) and not zeros.any()
    assert clip_problem(zeros, 16000) == "silent"
    assert clip_problem(zeros, 16000, skip_silent=False) is None
    short = load_audio(esc50_dir / "audio" / "5-015-A-0.wav")
    assert clip_problem(short, 16000, min_seconds=0.1).startswith("too short")
    assert clip_problem(short, 16000, min_seconds=0.0) is None


def test_nonfinite_policy(tmp_path):
    x = tone(440, 16000)
    x[::400] = np.nan
    sf.write(tmp_path / "few.wav", x, 16000, subtype="FLOAT")
    wave = load_audio(tmp_path / "few.wav")
    assert np.isfinite(wave).all() and (wave[::400] == 0).all()
    x[::50] = np.inf  # 2% > 1%
    sf.write(tmp_path / "many.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN/inf"):
        load_audio(tmp_path / "many.wav")
    assert np.isfinite(load_audio(tmp_path / "many.wav", max_nonfinite_fraction=0.05)).all()


def test_repaired_files_are_named_in_the_summary_but_not_counted_as_bad(tmp_path):
    x = tone(440, 16000)
    x[::400] = np.nan
    sf.write(tmp_path / "glitch.wav", x, 16000, subtype="FLOAT")
    sf.write(tmp_path / "clean.wav", tone(440, 16000), 16000, subtype="FLOAT")
    log = BadFileLog(log_path=tmp_path / "log.tsv")
    for _ in range(2):  # a second epoch does not count it twice
        load_audio(tmp_path / "glitch.wav", log=log)
    load_audio(tmp_path / "clean.wav", log=log)
    log.bad("/data/broken.wav", "cannot decode audio (No data chunk)")
    assert log.n_bad == 1 and log.n_repaired == 1
    assert log.repairs() == {str(tmp_path / "glitch.wav"): "0.25% of samples were NaN/inf"}
    assert log.summary().splitlines() == [
        "1 bad audio file(s) skipped:",
        "  1 x cannot decode audio: broken.wav",
        "1 audio file(s) repaired (NaN/inf samples set to 0): glitch.wav",
    ]
    # a worker process's copy records into the same file
    import pickle

    other = pickle.loads(pickle.dumps(log))
    other.repaired("/data/w.wav", "1.00% of samples were NaN/inf")
    assert log.n_repaired == 2 and "glitch.wav, w.wav" in log.summary()
    log.write(tmp_path / "bad_files.tsv")  # the list of skipped files holds only those
    assert (tmp_path / "bad_files.tsv").read_text() == (
        "cannot decode audio (No data chunk)\t/data/broken.wav\n"
    )


def test_a_log_with_only_repairs_summarises_them():
    log = BadFileLog()
    log.repaired("/a/b.wav", "0.10% of samples were NaN/inf")
    assert log.n_bad == 0
    assert log.summary() == "1 audio file(s) repaired (NaN/inf samples set to 0): b.wav"


def test_channel_selection_and_resampling(tmp_path):
    stereo = np.stack([tone(300, 44100), tone(2000, 44100)], 1)
    sf.write(tmp_path / "st.wav", stereo, 44100, subtype="PCM_16")
    right = load_audio(tmp_path / "st.wav", 22050, channel=1)
    assert len(right) == 22050 and abs(dominant_freq(right, 22050) - 2000) < 5
    with pytest.raises(AudioError, match="2 channel"):
        load_audio(tmp_path / "st.wav", channel=2)
    # A tone above the new Nyquist frequency is removed, not aliased.
    sf.write(tmp_path / "hi.wav", tone(7000, 44100), 44100, subtype="PCM_16")
    assert np.abs(load_audio(tmp_path / "hi.wav", 8000)[200:-200]).max() < 0.02


def test_fit_length_pads_and_crops():
    x = np.arange(1, 5, dtype=np.float32)
    assert fit_length(x, 8).tolist() == [0, 0, 1, 2, 3, 4, 0, 0]
    assert fit_length(x, 7).tolist() == [0, 1, 2, 3, 4, 0, 0]
    assert fit_length(x, 6, "end").tolist() == [1, 2, 3, 4, 0, 0]
    assert fit_length(np.arange(10.0), 4).tolist() == [3, 4, 5, 6]
    assert fit_length(x, 4) is x
    assert fit_length(np.ones((2, 3)), 5).shape == (2, 5)
    with pytest.raises(ValueError, match="mode"):
        fit_length(x, 8, "left")


def test_bad_file_log_counts_names_and_summarises(tmp_path):
    log = BadFileLog(log_path=tmp_path / "bad.tsv")
    for _ in range(3):
        log.ok()
    log.bad("/data/a.wav", "cannot decode audio (Format not recognised.)")
    log.bad("/data/b.wav", "cannot decode audio (No data chunk)")
    log.bad("/data/c.wav", "silent")
    log.bad("/data/c.wav", "silent")  # the same file again, next epoch
    assert log.n_bad == 3
    text = log.summary()
    assert "3 bad audio file(s)" in text
    assert "2 x cannot decode audio: a.wav, b.wav" in text
    assert "1 x silent: c.wav" in text
    # Another process's copy appends to the same file; the summary merges it.
    import pickle

    other = pickle.loads(pickle.dumps(log))
    other.bad("/data/d.wav", "empty file (0 bytes)")
    assert "d.wav" in log.summary() and len(log.reasons()) == 4


def test_bad_file_log_threshold_waits_for_min_files():
    tiny = BadFileLog(max_bad_fraction=0.5, min_files=20, total=3)
    tiny.bad("x.wav", "empty file")  # 1 of 1 so far, but the dataset has 3 files
    tiny.ok()
    tiny.ok()
    assert tiny.n_bad == 1
    log = BadFileLog(max_bad_fraction=0.5, min_files=20)
    for _ in range(5):
        log.ok()
    raised_at = None
    with pytest.raises(TooManyBadFiles, match=r"15 of the first 20[\s\S]*f0\.wav"):
        for i in range(20):
            raised_at = i
            log.bad(f"f{i}.wav", "cannot decode audio")
    assert raised_at == 14  # 15 bad of 20 tried > 50%: stops at the 20th file, not before


def test_default_log_file_is_temporary():
    import gc

    log = BadFileLog()
    log.bad("x.wav", "silent")
    path = log.log_path
    assert path.read_text() == "bad\tsilent\tx.wav\n"
    del log
    gc.collect()
    assert not path.exists()


def test_per_clip_work_runs_on_one_thread_and_restores_the_count(esc50_dir):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        wave = load_audio(esc50_dir / "audio" / "1-001-A-0.wav")  # 44.1 kHz: resampled
        assert wave.shape == (16000,) and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
