"""Shared command-line machinery for ``stec-audio`` and ``stec-vision``.

Both CLIs are ``PROG COMMAND [key=value ...]``: Hydra composes the modality's config
(``configs/<modality>/<modality>.yaml`` plus the shared groups in ``configs/common``) with
the overrides, and the command runs on the resulting config. Configs are installed as the
package ``stec_configs``, so they are found from wheels as well as from the source tree.
"""

from __future__ import annotations

import difflib
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from stec.distributed import barrier, init_from_env, is_main
from stec.engine.checkpoint import CheckpointError
from stec.engine.export import WEIGHTS_NAME, find_export
from stec.engine.trainer import NonFiniteLossError, Trainer, TrainerConfig
from stec.errors import ConfigError, UserError, user_input
from stec.methods import INVERSE_INPUTS, SSLMethod, build_method, choose

log = logging.getLogger("stec")

FLOORS = ("random", "logmel_stats", "pixels")

#: Errors the CLIs print as one line (the user can fix them); anything else is a bug and
#: keeps its traceback. Input errors exit with 2, failed runs (a diverged loss, a broken
#: checkpoint, a dataset with too many bad files) with 1.
USER_ERRORS = (
    UserError,
    FileNotFoundError,
    MissingMandatoryValue,
    CheckpointError,
    NonFiniteLossError,
)
INPUT_ERRORS = (ValueError, FileNotFoundError, MissingMandatoryValue)


def config_root() -> Path:
    return Path(str(resources.files("stec_configs")))


def compose_config(modality: str, overrides: Sequence[str]) -> DictConfig:
    """Compose ``configs/<modality>`` with the shared groups and the user's overrides."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = _compose(modality, overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_explain(err, modality, overrides)) from err
    OmegaConf.set_struct(cfg, True)
    return cfg


def _compose(modality: str, overrides: Sequence[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    root = config_root()
    GlobalHydra.instance().clear()
    search = f"hydra.searchpath=[file://{root / 'common'}]"
    with initialize_config_dir(config_dir=str(root / modality), version_base=None):
        return compose(config_name=modality, overrides=[*overrides, search])


def _explain(err: Exception, modality: str, overrides: Sequence[str]) -> str:
    """One line for a Hydra composition error: every allowed option of a group, or the
    closest valid key (instead of Hydra's advice to append an unknown key with ``+``)."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if isinstance(err, MissingConfigException) and err.options:
        group, _, value = str(err.missing_cfg_file).rpartition("/")
        options = sorted(err.options)
        message = (
            f"{group}={value} does not exist; allowed values for {group}: {', '.join(options)}"
        )
        close = difflib.get_close_matches(value, options, n=1)
        return message + (f"; did you mean {close[0]}?" if close else "")
    cause = err.__cause__
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and cause.full_key:
        # the failing node can be a parent of the key the user wrote (``trainr.epochs``)
        key = str(cause.full_key)
        written = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
        key = next((w for w in written if w.startswith(key + ".")), key)
        return _unknown_key(key, _valid_keys(modality, overrides))
    text = str(err).split("Config search path")[0]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _valid_keys(modality: str, overrides: Sequence[str]) -> dict[str, Any]:
    """The config the user's group choices (``data=esc50``) give, to look keys up in."""
    from hydra.errors import HydraException

    groups = set(group_options(modality))
    choices = [o for o in overrides if o.split("=", 1)[0] in groups]
    try:
        cfg = _compose(modality, choices)
    except HydraException:
        cfg = _compose(modality, [])
    return OmegaConf.to_container(cfg, resolve=False)


def _unknown_key(key: str, cfg: dict[str, Any]) -> str:
    parts = key.split(".")
    node: Any = cfg
    known: list[str] = []
    for part in parts:
        if not isinstance(node, dict):
            return f"unknown config key {key!r}: {'.'.join(known)!r} holds a value, not keys"
        if part not in node:
            break
        node, known = node[part], [*known, part]
    else:
        return f"config key {key!r} cannot be set this way"
    missing = parts[len(known)]
    close = difflib.get_close_matches(missing, [str(k) for k in node], n=1, cutoff=0.6)
    if close:
        guess = ".".join([*known, close[0], *parts[len(known) + 1 :]])
        return f"unknown config key {key!r}; did you mean {guess!r}?"
    where = f"keys of {'.'.join(known)}" if known else "top-level keys"
    return f"unknown config key {key!r}; {where}: {', '.join(sorted(str(k) for k in node))}"


def group_options(modality: str) -> dict[str, list[str]]:
    """Config groups and their options, for ``--help``."""
    groups: dict[str, list[str]] = {}
    for base in (config_root() / modality, config_root() / "common"):
        for folder in sorted(
            p for p in base.iterdir() if p.is_dir() and not p.name.startswith("_")
        ):
            groups[folder.name] = sorted(f.stem for f in folder.glob("*.yaml"))
    return groups


def print_help(prog: str, modality: str, commands: dict[str, str]) -> None:
    print(f"usage: {prog} [--debug] COMMAND [key=value ...] [group=option ...]\n\ncommands:")
    for name, text in commands.items():
        print(f"  {name:<10} {text}")
    print(
        "\noptions:\n"
        "  -h, --help  this help\n"
        "  --debug     debug logging, and the full traceback of every error (without it an\n"
        "              error in the config, data, a checkpoint or an export is one line)"
    )
    print("\nconfig groups (choose with group=option):")
    for group, options in group_options(modality).items():
        print(f"  {group:<10} {' | '.join(options)}")
    cfg = compose_config(modality, [])
    print("\ndefault config (override any key with key=value, e.g. trainer.epochs=50):\n")
    print(OmegaConf.to_yaml(cfg))


def run_cli(
    argv: Sequence[str] | None,
    prog: str,
    modality: str,
    commands: dict[str, tuple[str, Callable[[DictConfig], Any]]],
    user_errors: tuple[type[Exception], ...] = (),
) -> int:
    """Parse ``[--debug] COMMAND overrides...``, compose the config and run the command.

    Errors a user can fix (:data:`USER_ERRORS` and ``user_errors``) are printed as one line
    and exit with 2 (bad input) or 1 (a failed run); ``--debug`` adds their traceback. Any
    other exception is a bug: its traceback is printed and the exit status is 1.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    descriptions = {name: text for name, (text, _) in commands.items()}
    if not args or args[0] in ("-h", "--help", "help"):
        print_help(prog, modality, descriptions)
        return 0 if args else 2
    command, overrides = args[0], args[1:]
    if command not in commands:
        print(
            f"{prog}: unknown command {command!r}; allowed: {', '.join(commands)}", file=sys.stderr
        )
        return 2
    if any(a in ("-h", "--help") for a in overrides):
        print_help(prog, modality, descriptions)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if debug else logging.NOTSET)
    try:
        cfg = compose_config(modality, overrides)
        action = commands[command][1]
        if getattr(action, "wants_overrides", False):  # compare re-composes per run
            action(cfg, overrides)
        else:
            action(cfg)
    except Exception as err:
        if not isinstance(err, (*USER_ERRORS, *user_errors)):
            traceback.print_exc()
            print(f"{prog} {command}: internal error: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        if debug:
            traceback.print_exc()
        if isinstance(err, MissingMandatoryValue):
            key = err.full_key
            message = f"{key} is required: set it, e.g. {key}=..."
        else:  # one line, whatever the error's own layout
            message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"{prog} {command}: error: {message}", file=sys.stderr)
        return 2 if isinstance(err, INPUT_ERRORS) else 1
    return 0


@user_input("method", "efference")
def check_pretrain_config(cfg: DictConfig) -> None:
    """Check the choices of ``trainer``, ``method`` and ``efference`` before any data is
    read, so that a typo fails in a second, not after the data preparation."""
    trainer_config(cfg)
    choose("method.name", cfg.method.name, ("simclr", "byol", "relic"))
    choose("efference.mode", cfg.efference.mode, ("off", "inverse", "forward", "both"))
    choose("efference.inverse_output", cfg.efference.inverse_output, ("categorical", "regression"))
    choose("efference.inverse_input", cfg.efference.inverse_input, INVERSE_INPUTS)
    choose("method.norm", cfg.method.get("norm", "batch"), ("batch", "layer", "none"))


#: What a pretraining leaves in its run_dir: any of these means the folder holds a run
#: (finished, or killed after its first log or checkpoint).
RUN_MARKS = (
    "checkpoints/last.pt",
    "metrics.csv",
    "export/encoder.safetensors",
    "export/encoder.json",
)
#: What ``trainer.overwrite=true`` removes first, so that nothing in the folder (an
#: evaluation's results.json, TensorBoard curves) describes the replaced run. Other files stay.
RUN_OUTPUTS = (
    "checkpoints", "export", "metrics.csv", "config.json", "tensorboard", "results.json",
    "sed", "segmentation",
)  # fmt: skip


def begin_pretrain(cfg: DictConfig) -> None:
    """What both CLIs' ``pretrain`` do before reading any data: check the method, trainer
    and efference settings, refuse a ``run_dir`` that holds a run unless told how to go
    on, join ``torchrun``'s process group and, with ``trainer.overwrite=true``, remove
    the earlier run's outputs (rank 0, the others waiting)."""
    check_pretrain_config(cfg)
    run_dir, resume = Path(cfg.run_dir), str(cfg.trainer.resume)
    overwrite = bool(cfg.trainer.get("overwrite", False))
    if resume and overwrite:
        raise ConfigError(
            f"trainer.resume={resume} continues the run in run_dir={cfg.run_dir} and "
            "trainer.overwrite=true replaces it: set one of them"
        )
    held = [mark for mark in RUN_MARKS if (run_dir / mark).exists()]
    if held and not resume and not overwrite:
        raise ConfigError(
            f"run_dir={cfg.run_dir} already holds a run ({', '.join(held)}); continue it with "
            "trainer.resume=auto, or start afresh in a new run_dir=... (or replace it with "
            "trainer.overwrite=true)"
        )
    init_from_env()
    if held and overwrite:
        if is_main():
            for name in RUN_OUTPUTS:
                _remove(run_dir / name)
            log.info("trainer.overwrite=true: removed the earlier run in %s", run_dir)
        barrier()


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def build_method_from_config(
    cfg: DictConfig, backbone, feature_dim: int, action_space
) -> SSLMethod:
    """``cfg.method`` + ``cfg.efference`` -> an :class:`SSLMethod`; errors name the key."""
    check_pretrain_config(cfg)
    m = OmegaConf.to_container(cfg.method, resolve=True)
    e = OmegaConf.to_container(cfg.efference, resolve=True)
    name, mode = m.pop("name"), e["mode"]
    if mode != "off" and e.get("components"):
        action_space = action_space.select(list(e["components"]))
    kwargs = dict(
        action_space=action_space,
        efference=mode,
        lambda_manip=e["lambda_manip"],
        inverse_hidden=e["inverse_hidden"],
        inverse_output=e["inverse_output"],
        inverse_input=e["inverse_input"],
        action_embed_dim=e["action_embed_dim"],
        component_weights=e.get("component_weights"),
        equivariant_dims=e.get("equivariant_dims", 0),
        **m,
    )
    return build_method(name, backbone, feature_dim, **kwargs)


def pretrain_run(
    cfg: DictConfig,
    dataset,
    augmenter,
    encoder,
    feature_dim: int,
    *,
    n_classes: int,
    export_meta: dict[str, Any],
    collate_fn: Callable | None,
    items: str,
    data_summary: Callable[[], str] | None = None,
) -> Trainer:
    """Build the method from ``cfg`` around ``encoder`` and train it into ``cfg.run_dir``.

    At the end it prints ``data_summary()`` (what the modality reports about its data:
    absent, skipped and repaired files), else the dataset's own bad-file summary."""
    method = build_method_from_config(cfg, encoder, feature_dim, augmenter.action_space())
    with user_input("trainer"):  # checks the budget against the data (batch size, ...)
        trainer = Trainer(
            method,
            dataset,
            trainer_config(cfg),
            cfg.run_dir,
            augmenter=augmenter,
            collate_fn=collate_fn,
            num_classes=n_classes,
            run_config=plain(cfg),
            export_meta=export_meta,
        )
    if is_main():
        print(
            f"pretraining {cfg.method.name} (efference={cfg.efference.mode}) on {cfg.data.name}: "
            f"{len(dataset)} {items}, action space {method.action_space}, run dir {cfg.run_dir}"
        )
    last = trainer.fit()
    if is_main():
        if data_summary is not None:
            summary = data_summary()
            if summary:
                print(summary)
        elif getattr(dataset, "bad_files", None):  # image datasets
            print(dataset.summary())
        if not trainer.stopped_early:
            # a resume of a finished run trains no step: there is no loss to report
            done = f"loss {last['loss']:.4f}" if "loss" in last else "already trained"
            print(
                f"done: step {trainer.step}, {done}; "
                f"encoder exported to {Path(cfg.run_dir) / 'export'}"
            )
    return trainer


@user_input("trainer")
def trainer_config(cfg: DictConfig) -> TrainerConfig:
    values = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer = TrainerConfig.from_dict(values)
    choose("trainer.optimizer", trainer.optimizer, ("lars", "sgd", "adamw"))
    choose("trainer.amp", trainer.amp, ("off", "bf16", "fp16"))
    for key in ("epochs", "batch_size", "log_every", "checkpoint_every"):
        if getattr(trainer, key) < (0 if key == "epochs" else 1):
            raise ConfigError(f"trainer.{key}={getattr(trainer, key)} must be positive")
    for key in ("lr", "trust_coefficient"):
        if getattr(trainer, key) <= 0:
            raise ConfigError(f"trainer.{key}={getattr(trainer, key)} must be positive")
    return trainer


def plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers (for checkpoints and run directories)."""
    return OmegaConf.to_container(cfg, resolve=True)


def check_checkpoint(cfg: DictConfig, names: Sequence[str]) -> None:
    """Check ``checkpoint=`` before any work: one of ``names`` (the floors, ``init``), a
    run folder, an export folder or an export's ``encoder.safetensors``. Any other file (a
    training checkpoint ``last.pt``, a state dict) is refused with what the key takes."""
    takes = (
        "checkpoint= takes a run folder (checkpoint=RUN), its export folder (RUN/export) or "
        f"the export's {WEIGHTS_NAME}" + (f", or checkpoint={'|'.join(names)}" if names else "")
    )
    given = str(cfg.checkpoint)
    if not given:
        raise ConfigError(f"checkpoint is required: {takes}")
    if given in names:
        return
    path = Path(given).expanduser()
    if path.is_file() and path.name != WEIGHTS_NAME:
        hint = ""
        if path.parent.name == "checkpoints":  # a training checkpoint inside its run
            hint = f"; for the run it belongs to: checkpoint={path.parent.parent}"
        elif "init" in names:
            hint = "; a state dict of encoder weights: checkpoint=init encoder.init=FILE"
        raise ConfigError(f"checkpoint={given} is a file; {takes}{hint}")
    find_export(path)  # a missing export is named now, before any data is read


def results_path(cfg: DictConfig) -> Path:
    """Where ``evaluate`` writes ``results.json``: ``out=``, else in the folder of the
    checkpoint (the run or export folder, the folder of an ``encoder.safetensors``); for a
    floor in ``run_dir/FLOOR-DATA``, for ``init`` in ``run_dir/init-WEIGHTS-DATA``, keyed
    to the weights file of ``encoder.init`` (its name and a hash of its bytes)."""
    if cfg.out:
        return Path(cfg.out)
    name = str(cfg.checkpoint)
    if name in FLOORS:
        return Path(cfg.run_dir) / f"{name}-{cfg.data.name}" / "results.json"
    if name == "init":
        key = weights_key(str(cfg.encoder.init))
        return Path(cfg.run_dir) / f"init-{key}-{cfg.data.name}" / "results.json"
    path = Path(name).expanduser()
    return (path.parent if path.is_file() else path) / "results.json"


def weights_key(path: str | Path) -> str:
    """``NAME-HASH`` of a weights file: its stem and the start of the sha1 of its bytes, so
    that results of different weights never share a folder."""
    import hashlib

    path = Path(path).expanduser()
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"{path.stem}-{digest.hexdigest()[:8]}"


def save_embeddings(out: str | Path, ids: Sequence[str | bytes], labels, features) -> Path:
    """Write embeddings with their ids and labels to ``.parquet`` or ``.npy``.

    ``ids`` are written as text (bytes are decoded as UTF-8), so users can join on them:
    the parquet column ``id`` and, in ``.npy``, a unicode array. ``.npy`` holds a dict
    ``{"ids", "labels", "embeddings"}`` (load with ``np.load(path, allow_pickle=True).item()``).
    """
    import json

    import numpy as np

    ids = [i.decode("utf-8") if isinstance(i, bytes) else str(i) for i in ids]
    if len(ids) != len(features):
        raise ValueError(f"{len(ids)} ids for {len(features)} embeddings")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        import pandas as pd

        frame = pd.DataFrame({"id": list(ids), "label": [json.dumps(v) for v in labels.tolist()]})
        frame["embedding"] = list(features.numpy())
        frame.to_parquet(out)
    elif out.suffix == ".npy":
        np.save(
            out,
            {
                "ids": np.array(ids, dtype=str),
                "labels": labels.numpy(),
                "embeddings": features.numpy(),
            },
            allow_pickle=True,
        )
    else:
        raise ValueError(f"out={str(out)!r}: use a .npy or .parquet file name")
    return out


def compare_command(
    modality: str,
    title: str,
    pretrain: Callable,
    evaluate: Callable,
    embed: Callable,
    metric: str,
    evaluate_overrides: Sequence[str] = (),
):
    """Build the ``compare`` command of a modality CLI from its pretrain/evaluate/embed."""
    from stec.compare import build_plan, run_plan
    from stec.report import write_report

    def run(cfg: DictConfig, overrides: Sequence[str]) -> None:
        c = cfg.compare
        for key, allowed in (
            ("methods", ("simclr", "byol", "relic")),
            ("efference", ("off", "inverse", "forward", "both")),
        ):
            for value in c[key]:
                choose(f"compare.{key}", value, allowed)
        plan = build_plan(
            list(c.methods), list(c.efference), list(c.seeds), list(c.ablate), list(c.floors)
        )
        # what each arm sets itself is dropped from the shared overrides (the arms choose
        # method and efference; compare.methods / compare.efference say which)
        per_arm = (
            "compare.", "run_dir=", "seed=", "checkpoint=", "out=", "method=", "efference=",
            "trainer.resume=",
        )  # fmt: skip
        dropped = [o for o in overrides if o.startswith(per_arm) and not o.startswith("compare.")]
        if dropped:
            print(f"compare: ignoring {dropped}; each arm sets these itself")
        # every arm is also evaluated with the modality's extra reports (e.g. the action probe)
        common = [*evaluate_overrides, *(o for o in overrides if not o.startswith(per_arm))]
        # a pretraining arm continues from its own last checkpoint (never from one path
        # given to all arms): a killed comparison resumes mid-arm, and an arm whose
        # evaluation is asked again (its results.json removed) is not trained again
        resume = ["trainer.resume=auto"]
        summary = run_plan(
            plan,
            c.out,
            common,
            train=lambda o: pretrain(compose_config(modality, [*o, *resume])),
            evaluate=lambda o: evaluate(compose_config(modality, o)),
            embed=lambda o: embed(compose_config(modality, o)),
            metric=metric,
            resolve=lambda o: plain(compose_config(modality, o)),
        )
        command = " ".join([f"stec-{modality}", "compare", *overrides])
        report = write_report(summary, c.out, title, command)
        print(f"comparison written to {Path(c.out) / 'comparison.csv'} and {report}")

    run.wants_overrides = True
    return run
