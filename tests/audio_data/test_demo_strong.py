"""The demo set's strong labels: where the generator placed each short event."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stec_audio.datasets import esc50_entries
from stec_audio.demo import CLASSES, SAMPLE_RATE, VERSION, ensure_demo_dataset, generate_clip
from stec_audio.strong import read_strong_labels

SHORT = [name for name, _, event in CLASSES if event]


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
