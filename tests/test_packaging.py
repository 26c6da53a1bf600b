"""Packaging: every package folder is declared, a wheel carries the Hydra configs, and
imports run one way (the core imports no modality; inside ``stec_audio``, see
docs/audio.md, "Where things live")."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_declared():
    declared = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("stec", "stec_audio", "stec_vision")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found <= declared, found - declared


def test_core_imports_no_modality_package():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "stec").rglob("*.py")
        if "stec_audio" in p.read_text() or "stec_vision" in p.read_text()
    ]
    assert not offenders


#: What each part of ``stec_audio`` may import of ``stec_audio`` besides itself: the
#: folders ``augment`` and ``data`` are leaves, evaluation reads data and encoders but no
#: augmenter, and only the CLI imports ``app`` (the wiring from a config) or ``cli``.
AUDIO_IMPORTS = {
    "augment": set(),
    "data": set(),
    "encoders": set(),
    "weights": {"data", "encoders"},
    "hear": {"data", "encoders", "weights"},
    "evaluation": {"data", "encoders", "weights", "hear"},
    "app": {"augment", "data", "encoders", "weights", "hear", "evaluation"},
    # the command line's own: its config schema, then the commands
    "config_schema": {"app"},
    "cli": {"app", "config_schema", "augment", "data", "encoders", "weights", "hear", "evaluation"},
}
#: the parts of the command line, which alone may import the app
CLI_PARTS = ("cli", "config_schema")


def _module_name(path: Path, top: Path = ROOT) -> str:
    parts = path.relative_to(top).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _audio_imports(package: Path = ROOT / "stec_audio") -> list[tuple[str, str]]:
    """``(module, imported module)`` for every import of ``stec_audio`` inside it, those in
    functions and relative ones included; ``from P import name`` counts as importing
    ``P.name`` when that is a module, else ``P``."""
    files = sorted(package.rglob("*.py"))
    modules = {_module_name(p, package.parent) for p in files}
    found = []
    for path in files:
        module = _module_name(path, package.parent)
        here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: the package, up level - 1
                    base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            else:
                continue
            found += [(module, t) for t in targets if t.split(".")[0] == "stec_audio"]
    return found


def _part(module: str) -> str:
    """``stec_audio.data.io`` -> ``data``; ``stec_audio.cli`` -> ``cli``."""
    return module.split(".")[1] if "." in module else "__init__"


def _back_imports(imports: list[tuple[str, str]]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, target in imports
        if _part(target) != _part(module)
        and _part(target) not in AUDIO_IMPORTS.get(_part(module), set())
    )


def test_audio_imports_run_one_way():
    parts = {_part(_module_name(p)) for p in (ROOT / "stec_audio").rglob("*.py")}
    assert parts - {"__init__"} <= set(AUDIO_IMPORTS), "place the new part in AUDIO_IMPORTS"
    assert not _back_imports(_audio_imports())


def test_nothing_below_the_cli_imports_it_or_the_app():
    offenders = [
        f"{module} imports {target}"
        for module, target in _audio_imports()
        if _part(target) in ("app", *CLI_PARTS) and _part(module) not in CLI_PARTS
    ]
    assert not offenders


def test_the_import_check_finds_a_back_import(tmp_path):
    """Function-level and relative imports count, and an import of a module by name."""
    package = tmp_path / "stec_audio"
    for name, text in {
        "__init__.py": "",
        "app.py": "",
        "augment/__init__.py": "from . import ops\n",
        "augment/ops.py": "def decode():\n    from ..data import io\n",
        "data/__init__.py": "",
        "data/io.py": "from stec_audio import app\n",
    }.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    assert _back_imports(_audio_imports(package)) == [
        "stec_audio.augment.ops imports stec_audio.data.io",
        "stec_audio.data.io imports stec_audio.app",
    ]


@pytest.mark.slow
def test_wheel_contains_the_configs(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("stec-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in (
        "stec_configs/audio/audio.yaml",
        "stec_configs/audio/data/esc50.yaml",
        "stec_configs/vision/vision.yaml",
        "stec_configs/common/method/byol.yaml",
        "stec_configs/common/efference/inverse.yaml",
    ):
        assert config in names, config
    assert "stec/engine/trainer.py" in names and "stec_audio/hear.py" in names
