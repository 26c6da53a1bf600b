"""Run-directory logging: a CSV of metrics, TensorBoard when installed."""

from __future__ import annotations

import csv
import math
from pathlib import Path

FIXED_COLUMNS = ["step", "epoch", "lr", "samples_per_s"]


class MetricLogger:
    """Appends one CSV row per logging step. On resume, rows past the resumed step (logged
    by the interrupted run after its last checkpoint) are dropped, so the curve is clean."""

    def __init__(
        self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True
    ) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.columns: list[str] | None = None
        if self.path.exists():
            with open(self.path, newline="") as handle:
                rows = list(csv.DictReader(handle))
                columns = list(rows[0].keys()) if rows else None
            if resume_step is None:
                rows, columns = [], None
            else:
                rows = [r for r in rows if int(float(r["step"])) <= resume_step]
            self.columns = columns
            self._rewrite(rows)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except Exception:  # tensorboard is optional
                self.writer = None

    def _rewrite(self, rows: list[dict]) -> None:
        with open(self.path, "w", newline="") as handle:
            if self.columns:
                w = csv.DictWriter(handle, fieldnames=self.columns)
                w.writeheader()
                w.writerows(rows)

    def log(self, row: dict[str, float]) -> None:
        if self.columns is None:
            extra = sorted(k for k in row if k not in FIXED_COLUMNS)
            self.columns = FIXED_COLUMNS + extra
            self._rewrite([])
        clean = {k: _fmt(row.get(k, float("nan"))) for k in self.columns}
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writerow(clean)
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, int(row["step"]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The metrics CSV of a run as a list of float dicts."""
    with open(Path(run_dir) / "metrics.csv", newline="") as handle:
        return [
            {k: float(v) if v not in ("", "nan") else math.nan for k, v in r.items()}
            for r in csv.DictReader(handle)
        ]
