"""The demo set's strong labels: where the generator placed each short event."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from stec_audio.data.datasets import esc50_entries
from stec_audio.data.demo import CLASSES, SAMPLE_RATE, VERSION, ensure_demo_dataset, generate_clip
from stec_audio.data.strong import read_strong_labels

SHORT = [name for name, _, event in CLASSES if event]
#: sha1 of the first clip of every class as version 2 of the set wrote them (before the
#: strong labels): adding metadata must leave every clip's audio byte-identical
VERSION_2_AUDIO = {
    "1-100000-A-0.wav": "f8583cf2092929c3d673c8b3321fe2b24ab14761",
    "1-101000-A-1.wav": "74651623500a605ea806a326555363822edd2be1",
    "1-102000-A-2.wav": "78a0e703ad31dbbe9fef028a5177fc632194ff21",
    "1-103000-A-3.wav": "a08d5efd3c6056fbd362fdf2ba88169aee60ba94",
    "1-104000-A-4.wav": "bc219cee66558af3280ed6c0283550c0e8620fb0",
    "1-105000-A-5.wav": "b017457ef88bac6a14462c3ec9711158d962eb9a",
    "1-106000-A-6.wav": "bec1c3fe08122c6e4fe6f6a29d67ee327934d63e",
    "1-107000-A-7.wav": "4c6c08625693486b4408e61bf10107e95daf6d62",
    "1-108000-A-8.wav": "65669ca741adc71432d8579d7b9d1692b3e50739",
    "1-109000-A-9.wav": "023560753d4ee23b0bc857873ffb2256f366cba0",
}


def test_strong_tsv_lists_the_short_events_the_generator_placed(tmp_path):
    root = ensure_demo_dataset(tmp_path, n_per_class=3)
    assert root.name == f"esc_demo_v{VERSION}_n3" and VERSION == 3
    table = pd.read_csv(root / "meta" / "strong.tsv", sep="\t")
    assert list(table.columns) == ["filename", "onset", "offset", "event_label"]
    assert sorted(table["event_label"].unique()) == sorted(SHORT) == [
        "beep_event", "chirp_event", "knock_event",
    ]  # fmt: skip
    assert len(table) == 3 * len(SHORT)  # one event per short-event clip, none elsewhere
    for row in table.itertuples():
        target, k = int(row.filename.split("-")[-1][:-4]), int(row.filename.split("-")[1]) % 1000
        clean, facts = generate_clip(target, k, background=False)
        assert CLASSES[target][0] == row.event_label
        assert (row.onset, row.offset) == (round(facts.event[0], 3), round(facts.event[1], 3))
        # the sound lies in the labelled span: 99% of its energy, and it starts at the onset
        t = np.arange(len(clean)) / SAMPLE_RATE
        inside = (t >= row.onset - 0.001) & (t <= row.offset + 0.001)
        energy = clean.astype(np.float64) ** 2
        assert energy[inside].sum() > 0.99 * energy.sum(), row.filename
        first = t[np.flatnonzero(np.abs(clean) > 0.01 * np.abs(clean).max())[0]]
        assert abs(first - row.onset) < 0.01, (row.filename, first, row.onset)
        assert 0.1 < row.offset - row.onset < 0.5
    index = esc50_entries(root)
    strong = read_strong_labels(root / "meta" / "strong.tsv", index)
    strong.check_durations(index)
    assert sum(len(e) for e in strong.events) == len(table)


def test_only_the_short_event_classes_report_an_event():
    for target, (_, _, event) in enumerate(CLASSES):
        _, facts = generate_clip(target, 0, background=False)
        assert (facts.event is not None) == event


def test_the_audio_is_byte_identical_to_version_2(tmp_path):
    root = ensure_demo_dataset(tmp_path, n_per_class=1)
    written = {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in (root / "audio").iterdir()}
    assert written == VERSION_2_AUDIO
