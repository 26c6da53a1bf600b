"""The training stack on one GPU, end to end, on generated data (the demo sound set).

    python benchmarks/gpu_check.py OUT_DIR            # one GPU, about 5 minutes
    python benchmarks/gpu_check.py OUT_DIR --smoke    # tiny budgets; runs on the CPU too

Checks, each timed and run on its own (a failure is recorded and the next check goes on):

1. ``prepare``: the demo set, its normalisation statistics and the log-mel cache;
2. ``pretrain_bf16``: ``stec-audio pretrain trainer.amp=bf16``;
3. ``pretrain_bf16_compile``: the same with ``trainer.compile=true``;
4. ``pretrain_composed``: the same as 2 with ``augment=composed`` (the composed
   time-frequency map and the frame-reading inverse model);
5. ``evaluate``: the ESC-50 protocol on the bf16 run's export;
6. ``compare``: SimCLR with ``efference=off`` and ``inverse``, one seed, a tiny budget;
7. ``torchrun``: ``pretrain`` launched by ``torchrun --nproc_per_node=1``;
8. ``sync_debug``: training steps (SimCLR and BYOL with the inverse model, the default
   audio pipeline with the mixup bank) under ``torch.cuda.set_sync_debug_mode("error")``,
   then under ``"warn"`` to list every line that still synchronises;
9. ``syncbn``: the same steps with every BatchNorm as SyncBatchNorm on the path it takes
   under DDP (``trainer.sync_batchnorm=true``, on in every official vision preset):
   host synchronisations per step and per SyncBatchNorm call under
   ``set_sync_debug_mode("warn")``, the lines they come from, and the step time beside
   plain BatchNorm (one GPU: torch's SyncBatchNorm function runs as with two ranks, its
   collectives replaced by local copies, which never synchronise);
10. ``throughput``: training clips/s of AudioNTT2020 (d=2048) at batch 256 (per-step
   augmentation on the device, forward, backward, optimiser, bf16 autocast) for SimCLR and
   BYOL with ``efference=off`` and ``inverse`` side by side: the S-TEC overhead.

Writes ``OUT_DIR/summary.json`` and prints a table; exits non-zero if a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stec", "stec_audio", "stec_vision")

# the GPU run fits in about 5 minutes; each subprocess also has a hard limit
FULL = dict(
    n_per_class=10, batch=32, epochs=3, encoder_d=512, eval_epochs=30, compare_steps=10,
    torchrun_steps=5, sync_steps=4, tp_d=2048, tp_batch=256, tp_warmup=5, tp_steps=20,
    timeout=240,
)  # fmt: skip
SMOKE = dict(
    n_per_class=2, batch=4, epochs=1, encoder_d=32, eval_epochs=2, compare_steps=2,
    torchrun_steps=2, sync_steps=2, tp_d=64, tp_batch=8, tp_warmup=1, tp_steps=2,
    timeout=600,
)  # fmt: skip


class Check:
    def __init__(self, out: Path, budget: dict[str, Any], device: str) -> None:
        self.out, self.b, self.device = out, budget, device
        self.env = {**os.environ, "STEC_CACHE": str(out / "cache"), "PYTHONPATH": str(ROOT)}
        self.data = ["data=demo", f"data.n_per_class={budget['n_per_class']}"]
        self.common = [
            *self.data,
            f"encoder.kwargs.d={budget['encoder_d']}",
            f"trainer.batch_size={budget['batch']}",
            f"trainer.device={device}",
            "trainer.progress=false",
            "trainer.log_every=1",
            "trainer.num_workers=2",
            f"evaluate.device={device}",
            f"evaluate.epochs={budget['eval_epochs']}",
        ]

    def cli(self, *args: str, launcher: tuple[str, ...] = ()) -> str:
        """Run ``stec-audio ARGS`` in OUT_DIR; returns its output, raises on failure."""
        cmd = [sys.executable, *launcher, "-m", "stec_audio.cli", *args]
        done = subprocess.run(
            cmd,
            cwd=self.out,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=self.b["timeout"],
        )
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {(done.stderr or done.stdout)[-1500:]}")
        return done.stdout

    # ------------------------------------------------------------------ the checks
    def prepare(self) -> dict[str, Any]:
        out = self.cli("prepare", *self.data, "data.cache=true", "trainer.num_workers=2")
        return {"output": out.strip().splitlines()[-1]}

    def _pretrain(self, run: str, *extra: str) -> dict[str, Any]:
        from stec.engine.logging import read_metrics

        budget = [f"trainer.epochs={self.b['epochs']}", "trainer.warmup_steps=0"]
        fresh = "trainer.overwrite=true"  # a rerun into the same OUT_DIR measures afresh
        self.cli("pretrain", *self.common, *budget, f"run_dir={run}", fresh, *extra)
        rows = read_metrics(self.out / run)
        return {
            "steps": int(rows[-1]["step"]),
            "loss": round(rows[-1]["loss"], 4),
            "clips_per_s": round(rows[-1]["samples_per_s"], 1),
        }

    def pretrain_bf16(self) -> dict[str, Any]:
        return self._pretrain("runs/bf16", "trainer.amp=bf16")

    def pretrain_bf16_compile(self) -> dict[str, Any]:
        return self._pretrain("runs/bf16_compile", "trainer.amp=bf16", "trainer.compile=true")

    def pretrain_composed(self) -> dict[str, Any]:
        return self._pretrain("runs/composed", "trainer.amp=bf16", "augment=composed")

    def evaluate(self) -> dict[str, Any]:
        self.cli("evaluate", *self.common, "checkpoint=runs/bf16")
        results = json.loads((self.out / "runs/bf16/results.json").read_text())
        return {k: results[k] for k in ("accuracy_mean", "accuracy_std") if k in results}

    def compare(self) -> dict[str, Any]:
        self.cli(
            "compare",
            *self.common,
            f"trainer.max_steps={self.b['compare_steps']}",
            "compare.methods=[simclr]",
            "compare.efference=[off,inverse]",
            "compare.seeds=[0]",
            "compare.floors=[random]",
            "compare.out=compare",
        )
        summary = json.loads((self.out / "compare/comparison.json").read_text())
        return {name: round(arm["mean"], 4) for name, arm in summary["arms"].items()}

    def torchrun(self) -> dict[str, Any]:
        launcher = ("-m", "torch.distributed.run", "--nproc_per_node=1", "--master_port=29531")
        steps = f"trainer.max_steps={self.b['torchrun_steps']}"
        fresh = "trainer.overwrite=true"
        self.cli("pretrain", *self.common, steps, "run_dir=runs/torchrun", fresh, launcher=launcher)
        from stec.engine.checkpoint import load_checkpoint

        state = load_checkpoint(self.out / "runs/torchrun/checkpoints/last.pt")
        return {"steps": state["step"], "world_size": state["world_size"]}

    def sync_debug(self) -> dict[str, Any]:
        import torch

        cuda = self.device.startswith("cuda")
        result: dict[str, Any] = {} if cuda else {"note": "sync debug mode needs CUDA"}
        for method in ("simclr", "byol"):
            trainer, batch = self._trainer(method, "inverse", d=self.b["encoder_d"])
            for _ in range(2):  # lazy initialisation may synchronise once
                trainer.train_step(batch)
            first = "none"
            try:
                with _sync_mode("error" if cuda else None):
                    for _ in range(self.b["sync_steps"]):
                        trainer.train_step(batch)
            except RuntimeError as err:
                first = f"{_site(err.__traceback__)}: {str(err).splitlines()[0][:80]}"
            trainer, batch = self._trainer(method, "inverse", d=self.b["encoder_d"])
            trainer.train_step(batch)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with _sync_mode("warn" if cuda else None):
                    for _ in range(self.b["sync_steps"]):
                        trainer.train_step(batch)
            sites = sorted(
                {_relative(w.filename, w.lineno) for w in caught if "synchroniz" in str(w.message)}
            )
            result[method] = {"first_sync_in_error_mode": first, "sync_lines": sites}
            if cuda:
                torch.cuda.synchronize()
        return result

    def syncbn(self) -> dict[str, Any]:
        import torch

        if not self.device.startswith("cuda"):
            return {"note": "SyncBatchNorm's kernels need CUDA"}
        steps = self.b["sync_steps"]
        result: dict[str, Any] = {}
        for kind in ("batchnorm", "syncbatchnorm"):
            trainer, batch = self._trainer("simclr", "inverse", d=self.b["encoder_d"])
            with SyncBatchNormPath(trainer.method if kind == "syncbatchnorm" else None) as path:
                for _ in range(2):  # lazy initialisation may synchronise once
                    trainer.train_step(batch)
                torch.cuda.synchronize()
                path.calls = 0
                start = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    with _sync_mode("warn"):
                        for _ in range(steps):
                            trainer.train_step(batch)
                torch.cuda.synchronize()
            syncs = [w for w in caught if "synchroniz" in str(w.message)]
            result[kind] = {
                "step_ms": round(1000 * (time.perf_counter() - start) / steps, 2),
                "host_syncs_per_step": len(syncs) / steps,
                "sync_lines": sorted({_relative(w.filename, w.lineno) for w in syncs}),
            }
            if kind == "syncbatchnorm":
                result[kind].update(
                    layers=path.layers,
                    calls_per_step=path.calls / steps,
                    host_syncs_per_call=round(len(syncs) / max(path.calls, 1), 2),
                )
        return result

    def throughput(self) -> dict[str, Any]:
        import torch

        table: dict[str, Any] = {}
        for method in ("simclr", "byol"):
            for efference in ("off", "inverse"):
                trainer, batch = self._trainer(
                    method, efference, d=self.b["tp_d"], batch_size=self.b["tp_batch"]
                )
                for _ in range(self.b["tp_warmup"]):
                    trainer.train_step(batch)
                _synchronize(torch, self.device)
                start = time.perf_counter()
                for _ in range(self.b["tp_steps"]):
                    trainer.train_step(batch)
                _synchronize(torch, self.device)
                elapsed = time.perf_counter() - start
                table[f"{method}/{efference}"] = round(
                    self.b["tp_steps"] * self.b["tp_batch"] / elapsed, 1
                )
                del trainer, batch
        for method in ("simclr", "byol"):
            off, inverse = table[f"{method}/off"], table[f"{method}/inverse"]
            table[f"{method}/overhead_pct"] = round(100 * (off / inverse - 1), 1)
        return table

    # ------------------------------------------------------------------ helpers
    def _trainer(self, method: str, efference: str, d: int, batch_size: int | None = None):
        """A Trainer of AudioNTT2020 on random whole clips through the default pipeline
        (the composed map), its inverse model as ``augment=composed`` sets it: reading the
        frame sequences, its loss 0.3 reached over the first half of the run, gated by how
        well each action is read."""
        import torch

        from stec import TwoViews, build_method
        from stec.engine.trainer import Trainer, TrainerConfig
        from stec_audio.augment import (
            COMPOSED_EFFERENCE,
            DEFAULT_AUDIO_PIPELINE,
            build_audio_pipeline,
        )
        from stec_audio.encoders import AudioNTT2020

        batch_size = batch_size or self.b["batch"]
        torch.manual_seed(0)
        augmenter = TwoViews(build_audio_pipeline(DEFAULT_AUDIO_PIPELINE))
        encoder = AudioNTT2020(d=d)
        shipped = {} if efference == "off" else COMPOSED_EFFERENCE
        model = build_method(
            method, encoder, d, action_space=augmenter.action_space(), efference=efference,
            **shipped,
        )  # fmt: skip
        clips = torch.randn(batch_size, 1, 64, 501)
        data = [(clip, i % 10, i) for i, clip in enumerate(clips)]
        amp = "bf16" if self.device.startswith("cuda") else "off"
        cfg = TrainerConfig(batch_size=batch_size, device=self.device, amp=amp, progress=False)
        trainer = Trainer(model, data, cfg, self.out / "unused", augmenter, num_classes=10)
        return trainer, next(iter(trainer.loader))


class SyncBatchNormPath:
    """Within the block, the BatchNorm layers of ``model`` (converted in place to
    ``nn.SyncBatchNorm``) run torch's SyncBatchNorm autograd function as they do under DDP
    with two ranks, in this one process: the all-gather of the statistics and the
    all-reduce of the gradients are local copies (which never synchronise), so what
    synchronises is the function itself. ``calls`` counts the layers' forward calls and
    ``layers`` the layers. Nothing changes with ``model`` None."""

    class _Group:  # what the function asks of a process group
        def _get_backend_name(self) -> str:
            return "nccl"

    def __init__(self, model) -> None:
        self.model, self.calls, self.layers, self._undo = model, 0, 0, []

    def __enter__(self) -> SyncBatchNormPath:
        if self.model is None:
            return self
        import torch.distributed as dist
        from torch import nn
        from torch.nn.modules._functions import SyncBatchNorm as SyncFunction

        converted = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if converted is not self.model:
            raise ValueError("SyncBatchNormPath needs a model that is not itself a BatchNorm")
        self.layers = sum(isinstance(m, nn.SyncBatchNorm) for m in self.model.modules())
        group = self._Group()

        def forward(layer, x):  # nn.SyncBatchNorm.forward in training under DDP, 2 ranks
            self.calls += 1
            if layer.num_batches_tracked is not None:
                layer.num_batches_tracked.add_(1)
            return SyncFunction.apply(
                x, layer.weight, layer.bias, layer.running_mean, layer.running_var,
                layer.eps, layer.momentum or 0.0, group, 2,
            )  # fmt: skip

        def all_gather_into_tensor(out, x, group=None, async_op=False):
            out.copy_(x.reshape(1, -1).repeat(1, out.numel() // x.numel()).reshape(out.shape))

        def all_reduce(x, op=None, group=None, async_op=False):
            x.mul_(2)  # the sum over two ranks of equal values

        for owner, name, value in (
            (nn.SyncBatchNorm, "forward", forward),
            (dist, "all_gather_into_tensor", all_gather_into_tensor),
            (dist, "all_reduce", all_reduce),
        ):
            self._undo.append((owner, name, getattr(owner, name)))
            setattr(owner, name, value)
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, value in reversed(self._undo):
            setattr(owner, name, value)
        self._undo.clear()


class _sync_mode:
    """``torch.cuda.set_sync_debug_mode(mode)`` for a block (nothing when mode is None)."""

    def __init__(self, mode: str | None) -> None:
        self.mode = mode

    def __enter__(self) -> None:
        if self.mode is not None:
            import torch

            torch.cuda.set_sync_debug_mode(self.mode)

    def __exit__(self, *exc) -> None:
        if self.mode is not None:
            import torch

            torch.cuda.set_sync_debug_mode("default")


def _synchronize(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _relative(filename: str, lineno: int) -> str:
    path = Path(filename).resolve()
    try:
        return f"{path.relative_to(ROOT).as_posix()}:{lineno}"
    except ValueError:
        return f"{filename}:{lineno}"


def _site(tb) -> str:
    """The innermost frame of the packages in a traceback."""
    frames = [
        f for f in traceback.extract_tb(tb) if _relative(f.filename, 0).split("/")[0] in PACKAGES
    ]
    return _relative(frames[-1].filename, frames[-1].lineno) if frames else "?"


def run_checks(out: Path, smoke: bool, device: str) -> dict[str, Any]:
    check = Check(out, SMOKE if smoke else FULL, device)
    order: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("prepare", check.prepare),
        ("pretrain_bf16", check.pretrain_bf16),
        ("pretrain_bf16_compile", check.pretrain_bf16_compile),
        ("pretrain_composed", check.pretrain_composed),
        ("evaluate", check.evaluate),
        ("compare", check.compare),
        ("torchrun", check.torchrun),
        ("sync_debug", check.sync_debug),
        ("syncbn", check.syncbn),
        ("throughput", check.throughput),
    ]
    results: dict[str, Any] = {}
    for name, fn in order:
        start = time.perf_counter()
        print(f"[{name}] ...", flush=True)
        try:
            details, status = fn(), "ok"
        except Exception as err:  # recorded; the other checks still run
            details, status = {"error": f"{type(err).__name__}: {err}"[-2000:]}, "FAILED"
        results[name] = {
            "status": status,
            "seconds": round(time.perf_counter() - start, 1),
            **details,
        }
        print(f"[{name}] {status} in {results[name]['seconds']} s", flush=True)
    return results


def environment(device: str) -> dict[str, Any]:
    import torch

    info = {"torch": torch.__version__, "device": device, "python": sys.version.split()[0]}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{'check':<24}{'status':<8}{'seconds':>9}  details")
    for name, res in results.items():
        details = {k: v for k, v in res.items() if k not in ("status", "seconds")}
        print(f"{name:<24}{res['status']:<8}{res['seconds']:>9}  {json.dumps(details)[:200]}")
    tp = results.get("throughput", {})
    if tp.get("status") == "ok":
        print("\ntraining clips/s   efference=off   inverse   overhead")
        for method in ("simclr", "byol"):
            print(
                f"{method:<19}{tp[method + '/off']:>14}{tp[method + '/inverse']:>10}"
                f"{tp[method + '/overhead_pct']:>9} %"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the runs and summary.json")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets (CPU or GPU)")
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here; run with --smoke --device cpu")
    if not device.startswith("cuda") and not args.smoke:
        parser.error("the full check needs a GPU; use --smoke on the CPU")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = run_checks(args.out.resolve(), args.smoke, device)
    summary = {
        "environment": environment(device),
        "smoke": args.smoke,
        "total_seconds": round(time.perf_counter() - start, 1),
        "checks": results,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_table(results)
    print(f"\ntotal {summary['total_seconds']} s; summary in {args.out / 'summary.json'}")
    sys.exit(0 if all(r["status"] == "ok" for r in results.values()) else 1)


if __name__ == "__main__":
    main()
