"""Shared command-line machinery for ``stec-audio`` and ``stec-vision``.

Both CLIs are ``PROG COMMAND [key=value ...]``: Hydra composes the modality's config
(``configs/<modality>/<modality>.yaml`` plus the shared groups in ``configs/common``) with
the overrides, and the command runs on the resulting config. Configs are installed as the
package ``stec_configs``, so they are found from wheels as well as from the source tree.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from stec.distributed import is_main
from stec.engine.checkpoint import CheckpointError
from stec.engine.trainer import NonFiniteLossError, Trainer, TrainerConfig
from stec.methods import SSLMethod, build_method, choose

log = logging.getLogger("stec")


FLOORS = ("random", "logmel_stats", "pixels")


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the key and the allowed values."""


def config_root() -> Path:
    return Path(str(resources.files("stec_configs")))


def compose_config(modality: str, overrides: Sequence[str]) -> DictConfig:
    """Compose ``configs/<modality>`` with the shared groups and the user's overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    root = config_root()
    GlobalHydra.instance().clear()
    search = f"hydra.searchpath=[file://{root / 'common'}]"
    try:
        with initialize_config_dir(config_dir=str(root / modality), version_base=None):
            cfg = compose(config_name=modality, overrides=[*overrides, search])
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_explain(err)) from None
    OmegaConf.set_struct(cfg, True)
    return cfg


def _explain(err: Exception) -> str:
    text = str(err).split("Config search path")[0].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Could not find" in text and "Available options" in text:
        head = lines[0].split("In '")[-1].split("': ", 1)[-1]
        group = text.split("Available options in '")[1].split("'")[0]
        options = [
            line for line in lines if "Available options" not in line and line not in lines[0]
        ]
        return f"{head}; allowed values for {group}: {', '.join(options)}"
    if "not in struct" in text or "Could not override" in text:
        key = lines[0].split("'")[1] if "'" in lines[0] else lines[0]
        return f"unknown config key {key!r}: {lines[-1]}. Run with --help to see the valid keys."
    return " ".join(lines)


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
    print(f"usage: {prog} COMMAND [key=value ...] [group=option ...]\n\ncommands:")
    for name, text in commands.items():
        print(f"  {name:<10} {text}")
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
    """Parse ``COMMAND overrides...``, compose the config and run the command. Errors a user
    can fix (config, data, checkpoints, a diverged run, and ``user_errors``) are printed
    as one message and exit non-zero instead of a traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
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
    try:
        cfg = compose_config(modality, overrides)
        action = commands[command][1]
        if getattr(action, "wants_overrides", False):  # compare re-composes per run
            action(cfg, overrides)
        else:
            action(cfg)
    except MissingMandatoryValue as err:
        key = err.full_key
        print(
            f"{prog} {command}: error: {key} is required: set it, e.g. {key}=...", file=sys.stderr
        )
        return 2
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"{prog} {command}: error: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, NonFiniteLossError, *user_errors) as err:
        print(f"{prog} {command}: error: {err}", file=sys.stderr)
        return 1
    return 0


def build_method_from_config(
    cfg: DictConfig, backbone, feature_dim: int, action_space
) -> SSLMethod:
    """``cfg.method`` + ``cfg.efference`` -> an :class:`SSLMethod`; errors name the key."""
    m = OmegaConf.to_container(cfg.method, resolve=True)
    e = OmegaConf.to_container(cfg.efference, resolve=True)
    name = choose("method.name", m.pop("name"), ("simclr", "byol", "relic"))
    mode = choose("efference.mode", e["mode"], ("off", "inverse", "forward", "both"))
    choose("efference.inverse_output", e["inverse_output"], ("categorical", "regression"))
    choose("efference.inverse_input", e["inverse_input"], ("backbone", "projector_hidden"))
    choose("method.norm", m.get("norm", "batch"), ("batch", "layer", "none"))
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
) -> Trainer:
    """Build the method from ``cfg`` around ``encoder`` and train it into ``cfg.run_dir``."""
    method = build_method_from_config(cfg, encoder, feature_dim, augmenter.action_space())
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
        bad_log = getattr(dataset, "bad_log", None)
        if bad_log is not None and bad_log.n_bad:
            print(bad_log.summary())
        elif getattr(dataset, "bad_files", None):  # image datasets
            print(dataset.summary())
        if not trainer.stopped_early:
            print(
                f"done: step {trainer.step}, loss {last.get('loss', float('nan')):.4f}; "
                f"encoder exported to {Path(cfg.run_dir) / 'export'}"
            )
    return trainer


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


def results_path(cfg: DictConfig) -> Path:
    """Where ``evaluate`` writes ``results.json``: ``out=``, else next to the checkpoint."""
    if cfg.out:
        return Path(cfg.out)
    if cfg.checkpoint in FLOORS:
        return Path(cfg.run_dir) / f"{cfg.checkpoint}-{cfg.data.name}" / "results.json"
    return Path(cfg.checkpoint) / "results.json"


def save_embeddings(out: str | Path, ids: Sequence[str], labels, features) -> Path:
    """Write embeddings with their ids and labels to ``.parquet`` or ``.npy``.

    ``.npy`` holds a dict ``{"ids", "labels", "embeddings"}`` (load with
    ``np.load(path, allow_pickle=True).item()``).
    """
    import json

    import numpy as np

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
            {"ids": np.array(ids), "labels": labels.numpy(), "embeddings": features.numpy()},
            allow_pickle=True,
        )
    else:
        raise ValueError(f"out={str(out)!r}: use a .npy or .parquet file name")
    return out


def compare_command(
    modality: str, title: str, pretrain: Callable, evaluate: Callable, embed: Callable, metric: str
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
        per_arm = ("compare.", "run_dir=", "seed=", "checkpoint=", "out=", "method=", "efference=")
        dropped = [o for o in overrides if o.startswith(per_arm) and not o.startswith("compare.")]
        if dropped:
            print(f"compare: ignoring {dropped}; each arm sets these itself")
        common = [o for o in overrides if not o.startswith(per_arm)]
        summary = run_plan(
            plan,
            c.out,
            common,
            train=lambda o: pretrain(compose_config(modality, o)),
            evaluate=lambda o: evaluate(compose_config(modality, o)),
            embed=lambda o: embed(compose_config(modality, o)),
            metric=metric,
        )
        command = " ".join([f"stec-{modality}", "compare", *overrides])
        report = write_report(summary, c.out, title, command)
        print(f"comparison written to {Path(c.out) / 'comparison.csv'} and {report}")

    run.wants_overrides = True
    return run
