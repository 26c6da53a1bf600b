"""Strong labels (DESED / AudioSet-strong TSV) read next to ESC-50 and manifest indexes."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from stec.errors import DataError
from stec.evaluation.sed import Event
from stec_audio.data.datasets import esc50_entries, manifest_entries
from stec_audio.data.strong import read_strong_labels

from .conftest import make_esc50

FILES = {"1-001-A-0.wav": "pcm16_44k", "2-002-A-1.wav": "pcm16_22k", "3-003-A-0.wav": "u8_16k"}
HEADER = "filename\tonset\toffset\tevent_label\n"


@pytest.fixture
def esc50(tmp_path):
    return make_esc50(tmp_path / "ESC-50", FILES)  # three 1 s clips


def write_tsv(path, rows, header=HEADER):
    path.write_text(header + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


def test_events_are_read_per_clip_with_sorted_classes(esc50, tmp_path):
    tsv = write_tsv(
        tmp_path / "strong.tsv",
        [
            ("1-001-A-0.wav", 0.5, 0.75, "dog"),
            ("1-001-A-0.wav", 0.1, 0.3, "dog"),
            ("1-001-A-0.wav", 0.2, 0.6, "alarm"),  # another class may overlap
            ("3-003-A-0.wav", "", "", ""),  # a clip without events
            ("9-999-A-0.wav", 0.0, 1.0, "dog"),  # a clip the data does not hold
        ],
    )
    index = esc50_entries(esc50)
    strong = read_strong_labels(tsv, index)
    assert strong.classes == ["alarm", "dog"] and strong.n_skipped_rows == 1
    first = [index.id(i) for i in range(len(index))].index("1-001-A-0.wav")
    assert strong.reference(first) == [Event(1, 0.1, 0.3), Event(0, 0.2, 0.6), Event(1, 0.5, 0.75)]
    assert [len(e) for e in strong.events] == [3, 0, 0]
    # a frame is positive when its timestamp lies in [onset, offset)
    targets = strong.frame_targets(first, torch.tensor([0.05, 0.1, 0.25, 0.3, 0.62, 0.75]))
    assert targets[:, 1].tolist() == [0, 1, 1, 0, 1, 0]
    assert targets[:, 0].tolist() == [0, 0, 1, 1, 0, 0]
    strong.check_durations(index)  # every event ends within its 1 s clip


def test_manifest_ids_match_bare_file_names(tmp_path):
    (tmp_path / "audio" / "train").mkdir(parents=True)
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / "audio" / "train" / name, np.zeros(16000, np.float32) + 0.1, 16000)
    (tmp_path / "list.csv").write_text("path,fold\naudio/train/a.wav,1\naudio/train/b.wav,2\n")
    index = manifest_entries(tmp_path / "list.csv")
    tsv = write_tsv(
        tmp_path / "s.tsv", [("b.wav", 0.25, 0.5, "x"), ("audio/train/a.wav", 0, 1, "x")]
    )
    strong = read_strong_labels(tsv, index)
    assert [strong.reference(i) for i in range(2)] == [[Event(0, 0.0, 1.0)], [Event(0, 0.25, 0.5)]]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([("1-001-A-0.wav", -0.1, 0.5, "dog")], "row 2: negative onset -0.1 s"),
        ([("1-001-A-0.wav", 0.5, 0.2, "dog")], "row 2: the offset (0.2 s) must come after"),
        ([("1-001-A-0.wav", 0.5, 0.5, "dog")], "row 2: the offset (0.5 s) must come after"),
        ([("1-001-A-0.wav", "0.1s", 0.5, "dog")], "row 2: onset must be a number, got '0.1s'"),
        ([("1-001-A-0.wav", 0.1, "nan", "dog")], "row 2: offset must be finite"),
        ([("1-001-A-0.wav", 0.1, "", "dog")], "row 2: onset, offset and event_label must all"),
        (
            [("1-001-A-0.wav", 0.1, 0.5, "dog"), ("2-002-A-1.wav", 0, 1, "dog"),
             ("1-001-A-0.wav", 0.4, 0.9, "dog")],
            "rows 2 and 4: two 'dog' events of one clip overlap (0.1-0.5 s and 0.4-0.9 s)",
        ),
        ([("x.wav", 0.1, 0.5, "dog")], "none of its 1 rows names a clip of the data"),
    ],
)  # fmt: skip
def test_bad_rows_are_named_by_file_and_row(esc50, tmp_path, rows, message):
    tsv = write_tsv(tmp_path / "bad.tsv", rows)
    with pytest.raises(DataError) as err:
        read_strong_labels(tsv, esc50_entries(esc50))
    assert str(err.value).startswith(f"{tsv}: ") and message in str(err.value)


def test_touching_events_are_not_overlaps_and_a_late_event_is_named(esc50, tmp_path):
    index = esc50_entries(esc50)
    rows = [("1-001-A-0.wav", 0.1, 0.5, "dog"), ("1-001-A-0.wav", 0.5, 0.8, "dog")]
    assert len(read_strong_labels(write_tsv(tmp_path / "a.tsv", rows), index).events[0]) == 2
    late = write_tsv(tmp_path / "late.tsv", [*rows, ("2-002-A-1.wav", 0.5, 1.2, "dog")])
    strong = read_strong_labels(late, index)
    with pytest.raises(DataError, match=r"late.tsv: row 4: the event ends at 1.2 s, past the end"):
        strong.check_durations(index)
    # rounding of a few ms past the end is accepted
    ok = write_tsv(tmp_path / "ok.tsv", [("2-002-A-1.wav", 0.5, 1.005, "dog")])
    read_strong_labels(ok, index).check_durations(index)


def test_missing_columns_and_files_are_named(esc50, tmp_path):
    index = esc50_entries(esc50)
    csv = write_tsv(tmp_path / "c.tsv", [("1-001-A-0.wav", 0.1, 0.5)], "filename\tonset\toffset\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['event_label'\]"):
        read_strong_labels(csv, index)
    comma = tmp_path / "comma.tsv"
    comma.write_text("filename,onset,offset,event_label\n1-001-A-0.wav,0.1,0.5,dog\n")
    with pytest.raises(DataError, match="tab-separated"):
        read_strong_labels(comma, index)
    with pytest.raises(FileNotFoundError, match="nope.tsv: strong-label file not found"):
        read_strong_labels(tmp_path / "nope.tsv", index)
