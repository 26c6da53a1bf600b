"""The second built-in set: instrument phrases, in the ESC-50 layout, with its label sets."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from stec_audio.data.clip_index import add_label_columns
from stec_audio.data.datasets import esc50_entries
from stec_audio.data.demo import LABEL_COLUMNS
from stec_audio.data.demo_notes import (
    FAMILIES,
    SAMPLE_RATE,
    ensure_notes_dataset,
    generate_note_clip,
)

from .conftest import file_bytes


def test_notes_set_is_byte_identical_labelled_and_in_esc50_layout(tmp_path):
    a = ensure_notes_dataset(tmp_path / "a", n_per_class=2)
    b = ensure_notes_dataset(tmp_path / "b", n_per_class=2)
    assert file_bytes(a) == file_bytes(b)
    index = add_label_columns(esc50_entries(a), a / "meta" / "esc50.csv", "filename", LABEL_COLUMNS)
    assert len(index) == 16 and index.class_names == [f for f, _ in FAMILIES]
    info = sf.info(index.path(0))
    assert (info.samplerate, info.channels, info.subtype, info.duration) == (
        SAMPLE_RATE,
        1,
        "PCM_16",
        5.0,
    )
    for i in range(len(index)):
        k = int(index.id(i).split("-")[1]) % 1000
        wave, register, loudness = generate_note_clip(index.label(i), k)
        stored, _ = sf.read(index.path(i), dtype="float32")
        assert np.abs(stored - wave).max() < 1e-4  # 16-bit quantisation only
        assert index.tasks["pitch_register"][i] == register and 0 <= register <= 7
        assert index.tasks["loudness_band"][i] == loudness and 0 <= loudness <= 4
    # it is reused, not regenerated
    assert ensure_notes_dataset(tmp_path / "a", n_per_class=2) == a


def test_the_phrase_sounds_at_its_register():
    # the strongest partial of a flute phrase (a near-sinusoidal family) lies in its register
    for k in range(6):
        wave, register, _ = generate_note_clip(4, k)
        spectrum = np.abs(np.fft.rfft(wave))
        freqs = np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)
        loudest = freqs[np.argmax(spectrum * (freqs > 80))]
        semitones = 12 * np.log2(loudest / 110.0)
        assert register * 6 - 3 <= semitones <= register * 6 + 9, (k, loudest, register)
