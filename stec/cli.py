"""Shared command-line machinery for ``stec-audio`` and ``stec-vision``.

Both CLIs are ``PROG COMMAND [key=value ...]``: Hydra composes the modality's config with
the overrides (:mod:`stec.compose`), every value is checked by type and range
(:mod:`stec.config_check`), and the command runs on the resulting config.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from stec.compose import ConfigSchema, check_composed, compose_config, print_help
from stec.distributed import barrier, init_from_env, is_main
from stec.engine.checkpoint import Advise, CheckpointError, ResumeRefused
from stec.engine.trainer import NonFiniteLossError, Trainer, TrainerConfig
from stec.errors import ConfigError, RunStopped, UserError, user_input
from stec.files import written_whole
from stec.methods import INVERSE_INPUTS, SSLMethod, build_method, choose
from stec.run_dirs import (  # noqa: F401 - results_path: re-exported
    check_out,
    clear_run,
    results_path,
    run_held,
)

log = logging.getLogger("stec")

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


def run_cli(
    argv: Sequence[str] | None,
    prog: str,
    modality: str,
    commands: dict[str, tuple[str, Callable[[DictConfig], Any]]],
    user_errors: tuple[type[Exception], ...] = (),
    schema: ConfigSchema | None = None,
) -> int:
    """Parse ``[--debug] COMMAND overrides...``, compose the config, check every value by
    type and range (the modality's ``schema`` added to the shared rules) and run the
    command.

    Errors a user can fix (:data:`USER_ERRORS` and ``user_errors``) are printed as one line
    and exit with 2 (bad input) or 1 (a failed run); ``--debug`` adds their traceback. Any
    other exception is a bug: its traceback is printed and the exit status is 1.
    """
    schema = schema or ConfigSchema()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    descriptions = {name: text for name, (text, _) in commands.items()}
    if not args or any(a in ("-h", "--help") for a in args) or args[0] == "help":
        rest = [a for a in args if a not in ("-h", "--help", "help", *commands)]
        try:
            print_help(prog, modality, descriptions, rest, schema)
        except ConfigError as err:  # a group choice that does not exist
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2
        return 0 if args else 2
    command, overrides = args[0], args[1:]
    options = [a for a in args if a.startswith("-")]
    if options:  # Hydra would read it as an override and fail in its grammar's words
        print(
            f"{prog}: unknown option {options[0]!r}; the options are --debug and --help, "
            "and everything else is a command and key=value overrides",
            file=sys.stderr,
        )
        return 2
    if command not in commands:
        print(
            f"{prog}: unknown command {command!r}; allowed: {', '.join(commands)}", file=sys.stderr
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if debug else logging.NOTSET)
    try:
        cfg = compose_config(modality, overrides)
        check_composed(cfg, modality, overrides, schema)
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


def begin_pretrain(cfg: DictConfig) -> None:
    """What both CLIs' ``pretrain`` do before reading any data: check the method, trainer
    and efference settings, refuse a ``run_dir`` that holds a run unless told how to go
    on and join ``torchrun``'s process group. Nothing is written or removed yet: that waits
    until every setting has been checked (:func:`pretrain_run`)."""
    check_pretrain_config(cfg)
    run_dir, resume = Path(cfg.run_dir), str(cfg.trainer.resume)
    overwrite = bool(cfg.trainer.get("overwrite", False))
    if resume and overwrite:
        raise ConfigError(
            f"trainer.resume={resume} continues the run in run_dir={cfg.run_dir} and "
            "trainer.overwrite=true replaces it: set one of them"
        )
    held = run_held(run_dir)
    if held and not resume and not overwrite:
        raise ConfigError(
            f"run_dir={cfg.run_dir} already holds a run ({', '.join(held)}); continue it with "
            "trainer.resume=auto, or start afresh in a new run_dir=... (or replace it with "
            "trainer.overwrite=true)"
        )
    init_from_env()


def claim_run_dir(cfg: DictConfig, run_files: Callable[[Path], None] | None = None) -> None:
    """Once every setting has been checked: with ``trainer.overwrite=true`` remove the
    earlier run's outputs, then write the modality's own files of the run
    (``run_files(run_dir)``; rank 0, the others waiting). A start refused for a setting
    therefore neither removes the run it would replace nor leaves a file behind."""
    run_dir = Path(cfg.run_dir)
    if is_main():
        if cfg.trainer.get("overwrite", False) and run_held(run_dir):
            clear_run(run_dir)
            log.info("trainer.overwrite=true: removed the earlier run in %s", run_dir)
        if run_files is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            run_files(run_dir)
    barrier()


def check_components(cfg: DictConfig, names: Sequence[str], ablate: bool = False) -> None:
    """The action components that ``efference.components`` and
    ``efference.component_weights`` (and, for ``compare``, ``compare.ablate``) name must be
    among ``names``, those the augment pipeline emits; weights, among the chosen ones."""
    known = list(names)
    chosen = list(cfg.efference.get("components") or known)
    weights = cfg.efference.get("component_weights")
    keys = [
        ("efference.components", chosen, known),
        ("efference.component_weights", list(weights or ()), chosen),
    ]
    if ablate:
        keys.append(("compare.ablate", list(cfg.compare.get("ablate") or ()), known))
    for key, given, allowed in keys:
        unknown = [str(name) for name in given if name not in allowed]
        if unknown:
            which = "chosen" if allowed is chosen and chosen != known else "known"
            raise ConfigError(
                f"{key} names unknown component(s) {', '.join(unknown)}; the {which} "
                f"components of this augment pipeline: {', '.join(allowed)}"
            )


def build_method_from_config(
    cfg: DictConfig, backbone, feature_dim: int, action_space
) -> SSLMethod:
    """``cfg.method`` + ``cfg.efference`` -> an :class:`SSLMethod`; errors name the key."""
    check_pretrain_config(cfg)
    if action_space is not None:
        check_components(cfg, action_space.names)
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
        detach_frames=e.get("detach_frames", False),
        standardise_peaks=e.get("standardise_peaks", False),
        lambda_manip_warmup=e.get("lambda_manip_warmup", 0.0),
        forward_head=e.get("forward_head", "shared"),
        read_gate=e.get("read_gate", 0.0),
        **m,
    )
    with user_input("efference"):  # what depends on the encoder: the split, frame input
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
    run_files: Callable[[Path], None] | None = None,
    advise: Advise | None = None,
) -> Trainer:
    """Build the method from ``cfg`` around ``encoder`` and train it into ``cfg.run_dir``.

    ``run_files(run_dir)`` writes what the modality keeps in the run directory (audio: the
    statistics it trains with), called once the method and trainer are built, so only
    for a start that every setting allows (:func:`claim_run_dir`). At the end it prints
    ``data_summary()`` (what the modality reports about its data: absent, skipped and
    repaired files), else the dataset's own bad-file summary. A resume refused for its
    settings ends with ``advise(trained, config)`` when that says more (the modality's
    option that would continue the run)."""
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
    claim_run_dir(cfg, run_files)
    if is_main() and trainer.cfg.warmup_steps > trainer.total_steps:
        log.warning(
            "trainer.warmup_steps=%d is longer than the run (%d steps): the learning rate "
            "never reaches trainer.lr=%g",
            trainer.cfg.warmup_steps,
            trainer.total_steps,
            trainer.cfg.lr,
        )
    if is_main():
        print(
            f"pretraining {cfg.method.name} (efference={cfg.efference.mode}) on {cfg.data.name}: "
            f"{len(dataset)} {items}, action space {method.action_space}, run dir {cfg.run_dir}"
        )
    try:
        last = trainer.fit()
    except ResumeRefused as refused:
        advice = advise(refused.trained, plain(cfg)) if advise and refused.trained else ""
        if not advice:
            raise
        raise ResumeRefused(f"{refused}; {advice}", trained=refused.trained) from None
    if is_main():
        if data_summary is not None:
            summary = data_summary()
            if summary:
                print(summary)
        elif getattr(dataset, "bad_files", None):  # image datasets
            print(dataset.summary())
    if trainer.stopped_early:  # no export: whatever follows (compare evaluates) must not run
        raise RunStopped(
            f"stopped by a signal at step {trainer.step} of {trainer.total_steps}; checkpoint "
            f"saved to {trainer.checkpoint_path}: run the same command again to continue "
            "(a pretrain with trainer.resume=auto; a compare resumes its arms by itself)"
        )
    if is_main():
        from stec.report import forward_model_line, readability_line

        # whether the efference copy carried signal is the first thing to know of a run
        for line in (readability_line(Path(cfg.run_dir)), forward_model_line(Path(cfg.run_dir))):
            if line:
                print(line)
        # a resume of a finished run trains no step: there is no loss to report
        done = f"loss {last['loss']:.4f}" if "loss" in last else "already trained"
        print(
            f"done: step {trainer.step}, {done}; encoder exported to {Path(cfg.run_dir) / 'export'}"
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
    if trainer.epochs == 0 and trainer.max_steps == 0:  # would export an untrained encoder
        raise ConfigError(
            "trainer.epochs=0 with trainer.max_steps=0 trains no step: set trainer.epochs or "
            "trainer.max_steps above 0"
        )
    for key in ("lr", "trust_coefficient"):
        if getattr(trainer, key) <= 0:
            raise ConfigError(f"trainer.{key}={getattr(trainer, key)} must be positive")
    return trainer


def plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers (for checkpoints and run directories)."""
    return OmegaConf.to_container(cfg, resolve=True)


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
    out = check_embed_out(out)
    with written_whole(out) as tmp:
        if out.suffix == ".parquet":
            import pandas as pd

            frame = pd.DataFrame(
                {"id": list(ids), "label": [json.dumps(v) for v in labels.tolist()]}
            )
            frame["embedding"] = list(features.numpy())
            frame.to_parquet(tmp)
        else:
            with open(tmp, "wb") as handle:  # a file object: np.save adds no suffix to it
                np.save(
                    handle,
                    {
                        "ids": np.array(ids, dtype=str),
                        "labels": labels.numpy(),
                        "embeddings": features.numpy(),
                    },
                    allow_pickle=True,
                )
    return out


def check_embed_out(out: str | Path) -> Path:
    """``out=`` of ``embed``, checked before any work: a ``.npy`` or ``.parquet`` file."""
    required = "out is required: out=embeddings.npy or out=embeddings.parquet"
    return check_out(out, (".npy", ".parquet"), required=required)


def compare_command(
    modality: str,
    title: str,
    pretrain: Callable,
    evaluate: Callable,
    embed: Callable,
    metric: str,
    evaluate_overrides: Sequence[str] = (),
    components: Callable[[DictConfig], Sequence[str]] | None = None,
    advise: Advise | None = None,
):
    """Build the ``compare`` command of a modality CLI from its pretrain/evaluate/embed;
    ``components(cfg)`` names the action components, to check the names the comparison
    is given before any arm runs; ``advise`` as for :func:`pretrain_run`."""
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
        if components is not None:
            check_components(cfg, components(cfg), ablate=True)
        plan = build_plan(
            list(c.methods), list(c.efference), list(c.seeds), list(c.ablate), list(c.floors)
        )
        # what each arm sets itself is dropped from the shared overrides (the arms choose
        # method and efference; compare.methods / compare.efference say which)
        per_arm = (
            "compare.", "run_dir=", "seed=", "checkpoint=", "out=", "method=", "efference=",
            "trainer.resume=", "trainer.overwrite=",
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
            advise=advise,
        )
        command = " ".join([f"stec-{modality}", "compare", *overrides])
        report = write_report(summary, c.out, title, command)
        print(f"comparison written to {Path(c.out) / 'comparison.csv'} and {report}")

    run.wants_overrides = True
    return run
