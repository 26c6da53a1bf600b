"""stec-audio end to end on generated data in the real layouts (ESC-50 with bad files,
AudioSet with missing clips, the demo set), plus config errors and HEAR on the export."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from stec.cli import save_embeddings
from stec.engine.checkpoint import load_checkpoint
from stec.engine.export import export_backbone
from stec.errors import ExportError
from stec_audio import hear
from stec_audio.cli import main
from stec_audio.data.frontend import FrontEndConfig, NormStats
from stec_audio.encoders import AudioNTT2020
from stec_audio.hear import audio_export_meta
from tests.audio_data.conftest import ABSENT, BAD, GOOD, make_esc50
from tests.audio_data.test_audioset import short_wav, write_labels, write_segments

REPAIRED = next(name for name, kind in GOOD.items() if kind == "float_some_nan")
TINY = [
    "encoder.kwargs.d=32", "method.proj_hidden=32", "method.proj_dim=16",
    "efference.inverse_hidden=32", "efference.action_embed_dim=8", "augment.mixup.n_memory=16",
    "trainer.batch_size=4", "trainer.max_steps=3", "trainer.num_workers=0",
    "trainer.progress=false", "trainer.log_every=1", "trainer.warmup_steps=0",
    "evaluate.epochs=3", "evaluate.embed_batch_size=4",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def esc50(tmp_path):
    files = dict(GOOD)
    files.update({name: kind for name, (kind, _) in BAD.items()})
    return make_esc50(tmp_path / "ESC-50", files, [ABSENT])


def test_esc50_prepare_pretrain_resume_evaluate_embed(esc50, tmp_path, capsys):
    data = ["data=esc50", f"data.root={esc50}", "data.cache=true", "data.prepared=prep"]
    assert main(["prepare", *data, "trainer.num_workers=0", *TINY]) == 0
    out = capsys.readouterr().out
    assert "10 usable clips of 16" in out
    prepared = list((tmp_path / "prep").glob("esc50-*"))
    assert len(prepared) == 1 and len(list(prepared[0].glob("stats-*.json"))) == 1
    assert len(list((prepared[0] / "cache" / "items").rglob("*.npy"))) == 10
    assert f"1 listed clip(s) have no audio file: {ABSENT}" in out
    assert f"1 audio file(s) repaired (NaN/inf samples set to 0): {REPAIRED}" in out
    run = ["run_dir=run", "method=simclr", "efference=both"]
    assert main(["pretrain", *data, *run, *TINY]) == 0
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["step"] == 3
    # resume=auto continues from the checkpoint up to the new budget
    assert main(["pretrain", *data, *run, *TINY, "trainer.max_steps=5", "trainer.resume=auto"]) == 0
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["step"] == 5
    capsys.readouterr()
    assert main(["evaluate", *data, "checkpoint=run", *TINY]) == 0
    assert f"1 listed clip(s) have no audio file: {ABSENT}" in capsys.readouterr().out
    results = json.loads((tmp_path / "run/results.json").read_text())
    assert {"accuracy_mean", "accuracy_std", "per_fold"} <= set(results)
    assert len(results["per_fold"]) == 5 and results["n_clips"] == 10
    assert main(["embed", *data, "checkpoint=run", "out=emb.parquet", *TINY]) == 0
    frame = pd.read_parquet(tmp_path / "emb.parquet")
    assert len(frame) == 10 and len(frame["embedding"][0]) == 32
    # the export is what HEAR kits load
    model = hear.load_model(str(tmp_path / "run/export"))
    scene = hear.get_scene_embeddings(torch.randn(2, 16000) * 0.1, model)
    assert scene.shape == (2, model.scene_embedding_size)


def test_esc50_pretrain_without_prepare_reads_audio_and_reports_bad_files(esc50, tmp_path, capsys):
    data = ["data=esc50", f"data.root={esc50}", "data.prepared=prep2"]
    assert main(["pretrain", *data, "run_dir=r", "efference=inverse", *TINY]) == 0
    out = capsys.readouterr().out
    assert "1-011-A-0.wav" in out  # a corrupt file is named in the summary
    assert f"1 listed clip(s) have no audio file: {ABSENT}" in out
    assert f"1 audio file(s) repaired (NaN/inf samples set to 0): {REPAIRED}" in out
    (stored,) = (tmp_path / "prep2").glob("esc50-*/stats-*.json")  # computed once, stored
    assert NormStats.load(tmp_path / "r/stats.json") == NormStats.load(stored)
    provenance = json.loads(stored.read_text())
    assert provenance["n_clips"] == 16 and provenance["root"] == str(esc50.resolve())
    meta = json.loads((tmp_path / "r/export/encoder.json").read_text())
    assert meta["norm"]["std"] > 0 and meta["frontend"]["n_mels"] == 64


def test_audioset_pretrain_and_map_evaluation_with_missing_clips(tmp_path, capsys):
    root = tmp_path / "AudioSet"
    rows = []
    for i in range(24):
        ytid = f"clip{i:07d}"
        rows.append((ytid, 0.0, [i % 3, 3 + i % 2]))
        if i % 4 != 0:  # a quarter of the listed clips is missing
            short_wav(root / "audio" / f"{ytid}.wav")
    write_segments(root / "balanced_train_segments.csv", rows[:16])
    write_segments(root / "eval_segments.csv", rows[16:])
    write_labels(root / "class_labels_indices.csv")
    data = [
        "data=audioset",
        f"data.root={root}",
        "data.cache=false",
        "data.clip_seconds=1.0",
        "augment.time_crop.frames=48",
    ]
    assert main(["pretrain", *data, "run_dir=as", *TINY]) == 0
    assert main(["evaluate", *data, "checkpoint=as", *TINY]) == 0
    results = json.loads((tmp_path / "as/results.json").read_text())
    assert results["metric"] == "map" and 0.0 <= results["map"] <= 1.0
    assert results["n_train"] == 12 and results["n_eval"] == 6


def test_embedding_ids_are_the_esc50_file_names_in_parquet_and_npy(esc50, tmp_path):
    data = ["data=esc50", f"data.root={esc50}", "data.prepared=prep"]
    for out in ("e.parquet", "e.npy"):
        assert main(["embed", "checkpoint=random", *data, f"out={out}", *TINY]) == 0
    meta = pd.read_csv(esc50 / "meta" / "esc50.csv")
    frame = pd.read_parquet(tmp_path / "e.parquet")
    joined = frame.merge(meta, left_on="id", right_on="filename", validate="one_to_one")
    assert len(joined) == len(frame) == len(GOOD)  # every usable clip finds its row
    assert sorted(joined["filename"]) == sorted(GOOD)
    assert (joined["label"].map(json.loads) == joined["target"]).all()
    stored = np.load(tmp_path / "e.npy", allow_pickle=True).item()
    assert stored["ids"].dtype.kind == "U" and stored["ids"].tolist() == frame["id"].tolist()
    by_name = meta.set_index("filename").loc[stored["ids"]]
    assert (by_name["target"].to_numpy() == stored["labels"]).all()


def test_save_embeddings_writes_text_ids_whatever_their_type(tmp_path):
    ids = [b"1-100001-A-0.wav", np.bytes_(b"2-2-A-1.wav"), "clips/x.wav"]
    labels, features = torch.tensor([0, 1, 2]), torch.randn(3, 4)
    save_embeddings(tmp_path / "e.parquet", ids, labels, features)
    save_embeddings(tmp_path / "e.npy", ids, labels, features)
    expected = ["1-100001-A-0.wav", "2-2-A-1.wav", "clips/x.wav"]
    assert pd.read_parquet(tmp_path / "e.parquet")["id"].tolist() == expected
    assert np.load(tmp_path / "e.npy", allow_pickle=True).item()["ids"].tolist() == expected
    with pytest.raises(ValueError, match="3 ids for 2 embeddings"):
        save_embeddings(tmp_path / "f.npy", ids, labels[:2], features[:2])


def test_encoder_init_is_evaluated_by_checkpoint_init_and_starts_pretraining(tmp_path, capsys):
    torch.manual_seed(5)
    init = AudioNTT2020(d=32).state_dict()
    torch.save(init, tmp_path / "w.pth")
    demo = ["data.n_per_class=5", "data.prepared=prep", f"encoder.init={tmp_path / 'w.pth'}"]
    assert main(["evaluate", "checkpoint=init", *demo, *TINY]) == 0
    (path,) = (tmp_path / "runs/audio").glob("init-w-*-demo/results.json")  # keyed to w.pth
    results = json.loads(path.read_text())
    assert results["checkpoint"] == "init" and 0 <= results["accuracy_mean"] <= 1
    # pretraining starts from those weights: a negligible learning rate keeps them
    budget = ["trainer.lr=1e-12", "trainer.max_steps=1"]
    assert main(["pretrain", "run_dir=r", *demo, *TINY, *budget]) == 0
    exported = load_file(str(tmp_path / "r/export/encoder.safetensors"))
    for key in ("features.0.weight", "features.8.weight", "fc.0.weight", "fc.3.weight"):
        assert torch.allclose(exported[key], init[key], atol=1e-8), key
    capsys.readouterr()
    assert main(["evaluate", "checkpoint=init", "data.n_per_class=2", *TINY]) == 2
    assert (
        "checkpoint=init evaluates encoder.init: set encoder.init=FILE" in capsys.readouterr().err
    )
    args = ["evaluate", "checkpoint=init", "encoder.init=gone.pth", "data.n_per_class=2"]
    assert main([*args, *TINY]) == 2
    assert "encoder.init='gone.pth': file not found" in capsys.readouterr().err


def test_demo_random_floor_and_embed_npy(tmp_path):
    demo = ["data.n_per_class=5", "data.prepared=prep"]
    assert main(["evaluate", "checkpoint=random", *demo, *TINY]) == 0
    results = json.loads((tmp_path / "runs/audio/random-demo/results.json").read_text())
    assert results["checkpoint"] == "random" and 0 <= results["accuracy_mean"] <= 1
    assert main(["embed", "checkpoint=random", "out=e.npy", *demo, *TINY]) == 0
    stored = np.load(tmp_path / "e.npy", allow_pickle=True).item()
    assert stored["embeddings"].shape[0] == len(stored["ids"]) == len(stored["labels"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["pretrain", "trainer.epochz=3"], "trainer.epochz"),
        (["pretrain", "method=moco"], "allowed values for method: byol, relic, simclr"),
        (["pretrain", "method=simclrr"], "allowed values for method: byol, relic, simclr"),
        (["pretrain", "method=simclrr"], "did you mean simclr?"),
        (
            ["pretrain", "efference=inversee"],
            "allowed values for efference: both, forward, inverse, off",
        ),
        (["pretrain", "encoder=resnett"], "allowed values for encoder: audiontt, resnet"),
        (["pretrain", "trainer.epoch=3"], "unknown config key 'trainer.epoch'"),
        (["pretrain", "trainer.epoch=3"], "did you mean 'trainer.epochs'?"),
        (["pretrain", "augment.rrc.freq_scal=[1,1]"], "did you mean 'augment.rrc.freq_scale'?"),
        (["pretrain", "data=esc50", "data.rot=x"], "did you mean 'data.root'?"),
        (
            ["pretrain", "efference=sideways"],
            "allowed values for efference: both, forward, inverse, off",
        ),
        (
            ["pretrain", "trainer.optimizer=adam"],
            "trainer.optimizer='adam' is not valid; allowed values: lars, sgd, adamw",
        ),
        (
            ["pretrain", "efference.inverse_input=head"],
            "efference.inverse_input='head' is not valid",
        ),
        (["pretrain", "augment.rrc.bogus=1"], "bogus"),
        (["pretrain", "augment.rrc.freq_scale=[2,1]"], "augment.rrc: RandomResizeCrop: freq"),
        (["pretrain", "trainer.batch_size=64"], "trainer.batch_size=64 is larger than the"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["pretrain", "--debugg"], "unknown option '--debugg'; the options are --debug and --help"),
        (["evaluate"], "checkpoint is required"),
    ],
)
def test_config_errors_name_the_key(args, message, capsys):
    assert main([*args, "data.n_per_class=2", "trainer.progress=false"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "+" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_unknown_key_without_a_close_match_lists_the_keys_of_its_section(capsys):
    assert main(["pretrain", "augment.fader.zzz=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'augment.fader.zzz'" in err
    assert "keys of augment.fader: enabled, max_gain, p" in err


def test_user_errors_are_one_line_and_debug_shows_their_traceback(capsys):
    assert main(["evaluate", "data.n_per_class=2"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint is required" in err and "Traceback" not in err
    assert main(["--debug", "evaluate", "data.n_per_class=2"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].endswith(
        "checkpoint=random|init|logmel_stats"
    )


def test_an_internal_error_keeps_its_traceback(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr("stec_audio.cli.app.build_index", broken)
    assert main(["pretrain", "data.n_per_class=2"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "in broken" in err
    assert "internal error: ValueError: operands could not be broadcast together" in err


def test_help_lists_commands_and_groups(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in (
        "--debug",
        "pretrain",
        "evaluate",
        "embed",
        "prepare",
        "method",
        "efference",
        "data",
        "esc50",
        "audioset",
    ):
        assert word in out


def test_malformed_dataset_lists_are_one_line_naming_the_file(esc50, tmp_path, capsys):
    csv = esc50 / "meta" / "esc50.csv"
    csv.write_text(csv.read_text().replace("target,", "label,", 1))
    assert main(["pretrain", "data=esc50", f"data.root={esc50}", *TINY]) == 2
    err = capsys.readouterr().err
    assert f"{csv}: missing column(s) ['target']" in err and "Traceback" not in err
    root = tmp_path / "AudioSet"
    short_wav(root / "audio" / "clip0000000.wav")
    write_segments(root / "balanced_train_segments.csv", [("clip0000000", 0.0, [0])])
    write_labels(root / "class_labels_indices.csv")
    labels = root / "class_labels_indices.csv"
    labels.write_text(labels.read_text().replace("display_name", "name", 1))
    assert main(["pretrain", "data=audioset", f"data.root={root}", *TINY]) == 2
    err = capsys.readouterr().err
    assert f"{labels}: missing column(s) ['display_name']" in err and "Traceback" not in err


def test_prepared_statistics_and_caches_that_do_not_fit_are_one_line(tmp_path, capsys):
    demo = ["data.n_per_class=2", "data.prepared=prep", "data.cache=true", *TINY]
    assert main(["prepare", *demo]) == 0
    (folder,) = (tmp_path / "prep").glob("demo-*")
    config = json.loads((folder / "cache/config.json").read_text())
    (folder / "cache/config.json").write_text(json.dumps({**config, "pad_mode": "right"}))
    assert main(["prepare", *demo]) == 2
    err = capsys.readouterr().err
    assert "cache/config.json: cache made with a different configuration (pad_mode" in err
    assert "Traceback" not in err
    (folder / "cache/config.json").write_text(json.dumps(config))
    (stats,) = folder.glob("stats-*.json")
    stats.write_text('{"mean": 1.0}')
    assert main(["pretrain", *demo]) == 2
    err = capsys.readouterr().err
    assert f"{stats.name}: not a valid normalisation-statistics file" in err
    assert "Traceback" not in err


def test_a_mostly_broken_dataset_stops_early_with_a_message(tmp_path, capsys):
    files = {f"{1 + i % 5}-{i:03d}-A-{i % 2}.wav": "corrupt" for i in range(24)}
    files.update({f"{1 + i % 5}-{i:03d}-A-{i % 2}.wav": "pcm16_44k" for i in range(24, 30)})
    root = make_esc50(tmp_path / "broken", files)
    assert main(["pretrain", "data=esc50", f"data.root={root}", "data.prepared=p", *TINY]) == 1
    err = capsys.readouterr().err
    assert "bad audio file(s) skipped" in err and "cannot decode audio" in err


def test_evaluate_with_a_missing_checkpoint_names_it(tmp_path, capsys):
    assert main(["evaluate", "checkpoint=nowhere", "data.n_per_class=2", *TINY]) == 2
    assert "nowhere" in capsys.readouterr().err


def _tiny_export(folder):
    encoder = AudioNTT2020(d=32)
    meta = audio_export_meta(encoder, FrontEndConfig(), NormStats(0.5, 2.0))
    return export_backbone(encoder, folder, meta), encoder, meta


def _rewrite_meta(folder, change):
    meta = json.loads((folder / "encoder.json").read_text())
    change(meta)
    (folder / "encoder.json").write_text(json.dumps(meta))


def _drop_weight(folder, key):
    state = load_file(str(folder / "encoder.safetensors"))
    del state[key]
    save_file(state, str(folder / "encoder.safetensors"))


MALFORMED_EXPORTS = {
    "bad JSON": (
        lambda f: (f / "encoder.json").write_text('{"format": "stec-encoder",'),
        "encoder.json: not valid JSON",
    ),
    "no encoder entry": (
        lambda f: _rewrite_meta(f, lambda m: m.pop("encoder")),
        'encoder.json: "encoder" must be',
    ),
    "encoder without a name": (
        lambda f: _rewrite_meta(f, lambda m: m["encoder"].pop("name")),
        'encoder.json: "encoder" must be',
    ),
    "unknown encoder": (
        lambda f: _rewrite_meta(f, lambda m: m["encoder"].update(name="conformer")),
        "unknown audio encoder 'conformer'",
    ),
    "other format": (
        lambda f: _rewrite_meta(f, lambda m: m.update(format="onnx")),
        "encoder.json: format is 'onnx', expected 'stec-encoder'",
    ),
    "wrong shapes": (
        lambda f: _rewrite_meta(f, lambda m: m["encoder"]["kwargs"].update(d=64)),
        "encoder.safetensors: the weights do not match encoder 'audiontt'",
    ),
    "missing weight": (
        lambda f: _drop_weight(f, "fc.3.bias"),
        "missing fc.3.bias",
    ),
    "truncated weights": (
        lambda f: (f / "encoder.safetensors").write_bytes(
            (f / "encoder.safetensors").read_bytes()[:100]
        ),
        "encoder.safetensors: cannot read the weights",
    ),
    "bad norm": (
        lambda f: _rewrite_meta(f, lambda m: m.update(norm={"mean": 0.0})),
        'encoder.json: "norm" must be',
    ),
    "unknown front-end key": (
        lambda f: _rewrite_meta(f, lambda m: m["frontend"].update(fmax=8000)),
        "encoder.json: unknown frontend key(s) ['fmax']",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_EXPORTS))
def test_a_malformed_export_is_one_line_naming_file_and_problem(case, tmp_path, capsys):
    folder, _, _ = _tiny_export(tmp_path / "exp")
    corrupt, message = MALFORMED_EXPORTS[case]
    corrupt(folder)
    for command in (["evaluate"], ["embed", "out=e.npy"]):
        assert main([*command, f"checkpoint={folder}", "data.n_per_class=2", *TINY]) == 2
        err = capsys.readouterr().err
        assert message in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ExportError, match=re.escape(message)):
        hear.load_model(str(folder))


def test_a_well_formed_export_loads_with_its_norm_and_front_end(tmp_path):
    folder, encoder, _ = _tiny_export(tmp_path / "exp")
    model = hear.load_model(str(folder))
    assert model.norm == NormStats(0.5, 2.0) and model.frontend == FrontEndConfig()
    x = torch.randn(2, 1, 64, 96)
    assert torch.equal(model.encoder.eval()(x), encoder.eval()(x))


def _listed_but_absent(root, names):
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = [f"{name},{name[0]},0,dog,True,{i},A" for i, name in enumerate(names)]
    header = "filename,fold,target,category,esc10,src_file,take"
    (root / "meta" / "esc50.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


@pytest.mark.parametrize("cache", ["true", "false"])
@pytest.mark.parametrize("command", [["prepare"], ["pretrain"], ["evaluate", "checkpoint=random"]])
def test_a_dataset_without_a_usable_clip_is_one_line(command, cache, tmp_path, capsys):
    esc = _listed_but_absent(tmp_path / "esc", ["1-1-A-0.wav", "2-2-A-0.wav"])
    (tmp_path / "empty").mkdir()
    for data, message in (
        (["data=esc50", f"data.root={esc}"], "2 listed clip(s) have no audio file: 1-1-A-0.wav"),
        (["data=folder", f"data.root={tmp_path / 'empty'}"], "no usable clip: no audio file found"),
    ):
        assert main([*command, *data, f"data.cache={cache}", *TINY]) == 2
        err = capsys.readouterr().err
        assert f"data.root={data[1].split('=')[1]}: no usable clip" in err and message in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_dataset_whose_every_file_is_unusable_is_one_line(tmp_path, capsys):
    files = {f"{1 + i % 5}-{i:03d}-A-{i % 2}.wav": "corrupt" for i in range(4)}
    root = make_esc50(tmp_path / "broken", files)
    for cache in ("true", "false"):
        args = [f"data.root={root}", "data.max_bad_fraction=1.0", f"data.cache={cache}"]
        assert main(["prepare", "data=esc50", *args, *TINY]) == 2
        err = capsys.readouterr().err
        assert "no usable audio among 4 clips" in err and "cannot decode audio" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
