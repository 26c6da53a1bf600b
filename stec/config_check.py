"""One check of a composed config, by type and range, before a command does any work.

A key takes the type of its default: the value it has in the config that the user's
group choices compose (``data=audioset method=byol``, without their ``key=value``
overrides). A key whose default is an integer takes an integer, a number any number, a
boolean ``true``/``false``, a string a string (a number given for a path is read as text),
a list of numbers a list of numbers, and so on; keys added to the configs later are
covered the same way. A :class:`Rule` says what a default cannot: a range, the allowed
values, other documented forms (``null`` where the default is null, one number where a
list is expected) or a check of its own (a device that exists). Every wrong key is named
in one line: the key, the value given, what the key takes and its default.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stec.errors import ConfigError

MISSING = "???"  # a mandatory value not given yet: reported when it is read, with its key
KIND_NAMES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "null": "null",
    "list": "a list",
    "dict": "a mapping",
}


@dataclass(frozen=True)
class Rule:
    """What a key takes beyond its default's type.

    ``kinds`` replaces the default's type (``int``, ``float``, ``bool``, ``str``,
    ``null``, ``list[KIND]``, ``dict[KIND]``: names to values); ``low``/``high`` bound
    numbers, list items and mapping values (``above``/``below``: the bound itself is
    excluded); ``choices`` lists the allowed values; ``filled``: a list needs an item;
    ``check(key, value)`` returns a problem of its own, or None.
    """

    kinds: tuple[str, ...] = ()
    filled: bool = False
    low: float | None = None
    high: float | None = None
    above: bool = False
    below: bool = False
    choices: tuple[Any, ...] = ()
    check: Callable[[str, Any], str | None] | None = None


def at_least(low: float, **kwargs: Any) -> Rule:
    return Rule(low=low, **kwargs)


def positive(**kwargs: Any) -> Rule:
    return Rule(low=0, above=True, **kwargs)


def fraction(**kwargs: Any) -> Rule:
    return Rule(low=0, high=1, **kwargs)


def one_of(*choices: Any, **kwargs: Any) -> Rule:
    return Rule(choices=choices, **kwargs)


def device_problem(key: str, value: Any) -> str | None:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and only a device this machine has."""
    import torch

    usage = f"use {key}=cpu or {key}=auto"
    if value == "auto":
        return None
    try:
        device = torch.device(str(value))
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        return "expected auto, cpu, cuda, cuda:N or mps"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"no CUDA device is visible; {usage}"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"only {count} CUDA device(s) are visible (cuda:0 to cuda:{count - 1})"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return f"no MPS device is available; {usage}"
    return None


def folder_problem(key: str, value: Any) -> str | None:
    """A folder the command writes into: not a file, nor under one."""
    path = Path(str(value)).expanduser()
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                return f"{part} is a file, not a folder: give a folder's path"
            return None
    return None


#: The keys both command-line tools share.
COMMON_RULES: dict[str, Rule] = {
    "seed": at_least(0),
    "trainer.seed": at_least(0),
    "trainer.epochs": at_least(0),
    "trainer.max_steps": at_least(0),
    "trainer.batch_size": at_least(1),
    "trainer.optimizer": one_of("lars", "sgd", "adamw"),
    "trainer.lr": positive(),
    "trainer.weight_decay": at_least(0),
    "trainer.momentum": Rule(low=0, high=1, below=True),
    "trainer.trust_coefficient": positive(),
    "trainer.warmup_steps": at_least(0),
    "trainer.min_lr_ratio": fraction(),
    "trainer.amp": one_of("off", "bf16", "fp16"),
    "trainer.grad_clip": at_least(0),
    "trainer.checkpoint_every": at_least(1),
    "trainer.log_every": at_least(1),
    "trainer.num_workers": at_least(0),
    "trainer.prefetch_factor": at_least(1),
    "trainer.device": Rule(check=device_problem),
    "run_dir": Rule(check=folder_problem),
    "compare.out": Rule(check=folder_problem),
    "trainer.probe_lr": positive(),
    "method.name": one_of("simclr", "byol", "relic"),
    "method.lambda_switch": at_least(0),
    "method.proj_hidden": at_least(1),
    "method.proj_dim": at_least(1),
    "method.norm": one_of("batch", "layer", "none"),
    "method.temperature": positive(),
    "method.momentum": fraction(),
    "method.final_momentum": fraction(),
    "method.alpha": at_least(0),
    "efference.mode": one_of("off", "inverse", "forward", "both"),
    "efference.lambda_manip": at_least(0),
    "efference.lambda_manip_warmup": fraction(),
    "efference.inverse_hidden": at_least(1),
    "efference.inverse_output": one_of("categorical", "regression"),
    "efference.inverse_input": one_of("backbone", "projector_hidden", "frames"),
    "efference.equivariant_dims": at_least(0),
    "efference.action_embed_dim": at_least(1),
    "efference.forward_head": one_of("shared", "own"),
    "efference.read_gate": fraction(),
    "efference.components": Rule(kinds=("null", "list[str]")),
    "efference.component_weights": Rule(kinds=("null", "dict[float]"), low=0),
    "evaluate.protocol": one_of("logreg", "evar"),
    "evaluate.cs": positive(kinds=("list[float]", "float"), filled=True),
    "evaluate.inner_folds": at_least(2),
    "evaluate.max_iter": at_least(1),
    "evaluate.epochs": at_least(1),
    "evaluate.lr": positive(),
    "evaluate.batch_size": at_least(1),
    "evaluate.patience": at_least(1),
    "evaluate.knn_k": at_least(1),
    "evaluate.embed_batch_size": at_least(1),
    "evaluate.device": Rule(check=device_problem),
    "compare.methods": one_of("simclr", "byol", "relic", filled=True),
    "compare.efference": one_of("off", "inverse", "forward", "both", filled=True),
    "compare.seeds": at_least(0, kinds=("list[int]",), filled=True),
    "compare.ablate": Rule(kinds=("list[str]",)),
}


def check_config(
    cfg: DictConfig,
    defaults: Mapping[str, Any],
    rules: Mapping[str, Rule] = COMMON_RULES,
    closed: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> None:
    """Check every value of ``cfg`` against its default in ``defaults`` (a plain, resolved
    config) and ``rules`` (keys or ``fnmatch`` patterns; exact keys first, then the first
    pattern that matches). Numbers given for string keys become strings in ``cfg``. A key
    that ``defaults`` lacks is refused in the ``closed`` sections (those whose keys are
    known; ``""`` is the top level) unless it is one of the ``optional`` keys (checked by
    its rule), and left to its reader elsewhere (Hydra's ``+key=value``). Raises
    :class:`~stec.errors.ConfigError` naming every wrong key, on one line."""
    values = OmegaConf.to_container(cfg, resolve=True)
    problems: list[str] = []
    texts: dict[str, str] = {}
    ctx = _Context(rules, set(closed), set(optional), problems, texts)
    _walk(values, dict(defaults), "", ctx)
    # a key that refers to another (trainer.seed: ${seed}) is reported under that key
    links = _links(OmegaConf.to_container(cfg, resolve=False))
    problems = [p for p in problems if p.split("=", 1)[0] not in links]
    if problems:
        raise ConfigError("; ".join(problems))
    for key, text in texts.items():
        OmegaConf.update(cfg, key, text, merge=False)


@dataclass
class _Context:
    rules: Mapping[str, Rule]
    closed: set[str]
    optional: set[str]
    problems: list[str]
    texts: dict[str, str]


def _walk(value: Any, default: Any, key: str, ctx: _Context) -> None:
    if isinstance(default, dict) and default:
        if not isinstance(value, dict):
            keys = ", ".join(sorted(map(str, default)))
            ctx.problems.append(f"{key}={_show(value)}: expected a section with the keys {keys}")
            return
        for name, item in value.items():
            sub = f"{key}.{name}" if key else str(name)
            if name in default:
                _walk(item, default[name], sub, ctx)
            elif sub in ctx.optional:
                _walk(item, None, sub, ctx)
            elif key in ctx.closed:
                ctx.problems.append(_unknown(sub, key, [str(k) for k in default]))
        return
    if value == MISSING:
        return
    rule = find_rule(key, ctx.rules)
    kinds = rule.kinds or ((kind_of(default),) if kind_of(default) else ())
    if not kinds:
        return  # a null default without a rule: nothing says what it takes
    if "str" in kinds and _number(value) and not rule.choices:
        ctx.texts[key] = str(value)  # e.g. run_dir=2024: a name, not a number
        value = str(value)
    problem = _problem(key, value, kinds, rule, default)
    if problem:
        ctx.problems.append(f"{key}={_show(value)} is not valid{problem}")


def _links(raw: Any, key: str = "") -> set[str]:
    """The keys of ``raw`` (an unresolved config) whose value is an interpolation."""
    if isinstance(raw, dict):
        return set().union(*(_links(v, f"{key}.{k}" if key else str(k)) for k, v in raw.items()))
    return {key} if isinstance(raw, str) and raw.startswith("${") else set()


def _unknown(key: str, section: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key.rpartition(".")[2], known, n=1, cutoff=0.6)
    if close:
        meant = f"{section}.{close[0]}" if section else close[0]
        return f"unknown config key {key!r}; did you mean {meant!r}?"
    where = section or "the config"
    return f"unknown config key {key!r}; keys of {where}: {', '.join(sorted(known))}"


def find_rule(key: str, rules: Mapping[str, Rule]) -> Rule:
    if key in rules:
        return rules[key]
    for pattern, rule in rules.items():
        if fnmatch.fnmatchcase(key, pattern):
            return rule
    return Rule()


def kind_of(value: Any) -> str | None:
    """The type name of a default: ``int``, ``float``, ``bool``, ``str``, ``list[KIND]``
    (``list`` when empty or mixed), ``dict``; None for null."""
    if value is None:
        return None
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(value, types):
            return kind
    if isinstance(value, list | tuple):
        inner = {kind_of(v) for v in value} - {None}
        if inner == {"int", "float"}:
            inner = {"float"}
        return f"list[{inner.pop()}]" if len(inner) == 1 else "list"
    return "dict"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def matches(kind: str, value: Any) -> bool:
    """Whether ``value`` is of ``kind`` (an integer is a number; booleans are neither)."""
    if kind == "null":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return _number(value) and isinstance(value, int)
    if kind == "float":
        return _number(value) and math.isfinite(value)
    if kind == "str":
        return isinstance(value, str)
    outer, _, inner = kind.partition("[")
    inner = inner.rstrip("]")
    if outer == "list":
        return isinstance(value, list) and all(matches(inner, v) for v in value if inner)
    if outer == "dict":
        return isinstance(value, dict) and all(
            isinstance(k, str) and (not inner or matches(inner, v)) for k, v in value.items()
        )
    raise ValueError(f"unknown kind {kind!r}")  # a bug in a rule table


def _problem(key: str, value: Any, kinds: tuple[str, ...], rule: Rule, default: Any) -> str | None:
    """What is wrong with ``value``, as the end of ``KEY=VALUE is not valid...``; None if
    nothing is."""
    expected = f": expected {_expected(kinds, rule)} (default {_show(default)})"
    if not any(matches(kind, value) for kind in kinds):
        return expected
    items = value if isinstance(value, list) else [value]
    if isinstance(value, dict):
        items = list(value.values())
    if rule.choices and any(item not in rule.choices for item in items if item is not None):
        allowed = ", ".join(c if isinstance(c, str) else _show(c) for c in rule.choices)
        of = " of its items" if isinstance(value, list) else ""
        return f"; allowed values{of}: {allowed}"
    if any(_number(item) and not _in_range(item, rule) for item in items):
        return expected
    if rule.filled and value == []:
        return ": expected at least one item"
    problem = rule.check(key, value) if rule.check is not None else None
    return f": {problem}" if problem else None


def _in_range(number: float, rule: Rule) -> bool:
    if rule.low is not None and (number <= rule.low if rule.above else number < rule.low):
        return False
    return rule.high is None or (number < rule.high if rule.below else number <= rule.high)


def _expected(kinds: tuple[str, ...], rule: Rule) -> str:
    names = []
    for kind in kinds:
        outer, _, inner = kind.partition("[")
        inner = inner.rstrip("]")
        if outer == "list" and inner:
            names.append(f"a list of {_plural(inner)}")
        elif outer == "dict" and inner:
            names.append(f"a mapping of names to {_plural(inner)}")
        else:
            names.append(KIND_NAMES[kind])
    return " or ".join(names) + _range_text(rule)


def _plural(kind: str) -> str:
    return {"int": "integers", "float": "numbers", "bool": "booleans", "str": "strings"}[kind]


def _range_text(rule: Rule) -> str:
    low = None if rule.low is None else f"{'>' if rule.above else '>='} {_show(rule.low)}"
    high = None if rule.high is None else f"{'<' if rule.below else '<='} {_show(rule.high)}"
    if low and high:
        return f" ({low} and {high})"
    return f" {low or high}" if (low or high) else ""


def _show(value: Any) -> str:
    """A value as written on the command line (strings quoted, null, true/false)."""
    if isinstance(value, str):
        return repr(value)
    return json.dumps(value, default=str)
