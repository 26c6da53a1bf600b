"""Composing the Hydra configs of ``stec-audio`` and ``stec-vision``, checking them and
describing them in ``--help``.

Hydra composes ``configs/<modality>/<modality>.yaml`` plus the shared groups in
``configs/common`` with the user's overrides. Configs are installed as the package
``stec_configs``, so they are found from wheels as well as from the source tree. A key of
a section whose default is empty (``{}``: vision's ``augment``, the ``resnet`` encoder's
``kwargs``) needs no ``+``: it is added for the user.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stec.config_check import COMMON_RULES, Rule, check_config
from stec.errors import ConfigError


@dataclass
class ConfigSchema:
    """What a modality adds to the check of its config and to ``--help``: ``rules`` (before
    the shared :data:`~stec.config_check.COMMON_RULES`), ``expand(defaults, cfg)``,
    which fills in place the sections the modality resolves itself (vision's ``augment``
    from the data's preset; ``cfg`` is None for ``--help``), with ``note`` saying so, and
    ``check(cfg)``: the problems of values that only make sense together (one line each).

    A key that the defaults lack (Hydra's ``+key=value``) is refused unless it lies in an
    ``open`` section (``fnmatch`` patterns: sections whose reader checks its own keys, e.g.
    an encoder's arguments) or is one of the ``optional`` keys (read where present,
    though some group options leave them out); a section whose default is empty is open."""

    rules: Mapping[str, Rule] = field(default_factory=dict)
    expand: Callable[[dict[str, Any], DictConfig | None], None] | None = None
    note: str = ""
    check: Callable[[DictConfig], list[str]] | None = None
    open: Sequence[str] = ()
    optional: Sequence[str] = ()

    def all_rules(self) -> dict[str, Rule]:
        return {**COMMON_RULES, **self.rules}


def config_root() -> Path:
    return Path(str(resources.files("stec_configs")))


def compose_config(modality: str, overrides: Sequence[str]) -> DictConfig:
    """Compose ``configs/<modality>`` with the shared groups and the user's overrides."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = _compose(modality, open_keys(modality, overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_explain(err, modality, overrides)) from err
    OmegaConf.set_struct(cfg, True)
    return cfg


def check_composed(
    cfg: DictConfig, modality: str, overrides: Sequence[str], schema: ConfigSchema
) -> None:
    """Check every value of ``cfg`` by type and range against the defaults of the user's
    group choices (:func:`stec.config_check.check_config`), before any work."""
    defaults = default_config(modality, overrides)
    if schema.expand is not None:
        schema.expand(defaults, cfg)
    # every section knows its keys, so an unknown one is a mistake that would otherwise be
    # ignored in silence; open are the empty ones the modality does not fill in and those
    # whose reader checks its own keys
    closed = [""] + [
        key
        for key, value in _sections(defaults)
        if value and not any(fnmatch.fnmatchcase(key, p) for p in schema.open)
    ]
    check_config(cfg, defaults, schema.all_rules(), closed, schema.optional)
    problems = schema.check(cfg) if schema.check is not None else []
    if problems:
        raise ConfigError("; ".join(problems))


def _compose(modality: str, overrides: Sequence[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    root = config_root()
    GlobalHydra.instance().clear()
    search = f"hydra.searchpath=[file://{root / 'common'}]"
    with initialize_config_dir(config_dir=str(root / modality), version_base=None):
        return compose(config_name=modality, overrides=[*overrides, search])


def group_choices(modality: str, overrides: Sequence[str]) -> list[str]:
    """The ``group=option`` overrides among ``overrides``."""
    groups = set(group_options(modality))
    return [o for o in overrides if o.split("=", 1)[0] in groups]


def default_config(
    modality: str, overrides: Sequence[str] = (), resolve: bool = True
) -> dict[str, Any]:
    """The plain config that the group choices among ``overrides`` give without their
    ``key=value`` (the modality's defaults when a choice does not exist): the defaults
    that keys are checked against and that ``--help`` prints."""
    return copy.deepcopy(_defaults(modality, tuple(group_choices(modality, overrides)), resolve))


@functools.lru_cache(maxsize=64)
def _defaults(modality: str, choices: tuple[str, ...], resolve: bool) -> dict[str, Any]:
    from hydra.errors import HydraException

    try:
        cfg = _compose(modality, choices)
    except HydraException:
        cfg = _compose(modality, [])
    return OmegaConf.to_container(cfg, resolve=resolve)


def open_keys(modality: str, overrides: Sequence[str]) -> list[str]:
    """``overrides`` with Hydra's ``+`` added to each ``key=value`` whose section has an
    empty default: such keys are the modality's to check, not Hydra's."""
    defaults = default_config(modality, overrides, resolve=False)
    opened = []
    for override in overrides:
        key, eq, _ = override.partition("=")
        parent, _, name = key.rpartition(".")
        if eq and parent and key[:1] not in "+~" and _node(defaults, parent) == {}:
            override = "+" + override
        opened.append(override)
    return opened


def _sections(cfg: dict[str, Any], key: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every section of ``cfg`` (nested dict) with its dotted key."""
    found = []
    for name, value in cfg.items():
        if isinstance(value, dict):
            sub = f"{key}.{name}" if key else str(name)
            found += [(sub, value), *_sections(value, sub)]
    return found


def _node(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


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
        return _unknown_key(key, default_config(modality, overrides, resolve=False))
    text = str(err).split("Config search path")[0]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


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


def print_help(
    prog: str,
    modality: str,
    commands: dict[str, str],
    overrides: Sequence[str] = (),
    schema: ConfigSchema | None = None,
) -> None:
    """The usage, the commands, the groups and every key with its default, for the group
    choices among ``overrides`` (``--help data=audioset`` lists AudioSet's keys)."""
    print(f"usage: {prog} [--debug] COMMAND [key=value ...] [group=option ...]\n\ncommands:")
    for name, text in commands.items():
        print(f"  {name:<10} {text}")
    print(
        "\noptions:\n"
        "  -h, --help  this help; with group=option choices, the config they give\n"
        "  --debug     debug logging, and the full traceback of every error (without it an\n"
        "              error in the config, data, a checkpoint or an export is one line)"
    )
    print("\nconfig groups (choose with group=option):")
    for group, options in group_options(modality).items():
        print(f"  {group:<10} {' | '.join(options)}")
    compose_config(modality, group_choices(modality, overrides))  # a wrong choice: one line
    cfg = default_config(modality, overrides, resolve=False)
    chosen = " ".join(group_choices(modality, overrides)) or "the default groups"
    print(
        f"\nconfig of {chosen} (override any key with key=value, e.g. trainer.epochs=50; "
        f"see another group's keys with --help group=option):\n"
    )
    if schema is not None and schema.expand is not None:
        schema.expand(cfg, None)
        if schema.note:
            print(f"# {schema.note}")
    print(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    notes = key_notes(modality, overrides)
    if notes:
        print("notes from the config files (when to use a key, its units, its choices):\n")
        print("\n".join(notes))


def composed_files(modality: str, overrides: Sequence[str] = ()) -> list[Path]:
    """The YAML files a composition reads: ``<modality>.yaml`` and, per group, the option
    that ``overrides`` choose or else the modality's default."""
    root = config_root()
    chosen = dict(o.split("=", 1) for o in group_choices(modality, overrides))
    files = [root / modality / f"{modality}.yaml"]
    for entry in OmegaConf.to_container(OmegaConf.load(files[0])).get("defaults", []):
        if isinstance(entry, dict):
            ((group, option),) = entry.items()
            option = chosen.get(group, option)
            for base in (root / modality, root / "common"):
                if (base / group / f"{option}.yaml").is_file():
                    files.append(base / group / f"{option}.yaml")
    return files


def key_notes(modality: str, overrides: Sequence[str] = ()) -> list[str]:
    """Every commented line of the composed files, under the file's name: the sentence on
    when to use a key lives once, beside the key, and ``--help`` shows it from there."""
    root = config_root()
    notes: list[str] = []
    for path in composed_files(modality, overrides):
        lines = [
            line.rstrip()
            for line in path.read_text().splitlines()
            if "#" in line and not line.lstrip().startswith("# @package")
        ]
        if lines:
            notes.append(f"{path.relative_to(root).as_posix()}:")
            notes.extend(f"  {line}" for line in lines)
    return notes
