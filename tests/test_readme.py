"""The README's Python API example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_api_example_runs():
    text = README.read_text()
    section = text.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    metrics = namespace["metrics"]
    assert {"ssl_loss", "action_loss", "action_acc/rt60"} <= set(metrics)


def test_quick_start_has_exactly_two_setup_commands_and_ci_runs_the_same():
    text = README.read_text()
    block = text.split("## Install and test", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip()]
    assert commands == ['pip install -e ".[dev]"', "pytest"]
    ci = (README.parent / ".ci/run").read_text().splitlines()
    assert ci[-1] == "pytest" and 'python -m pip install -e ".[dev]"' in ci
