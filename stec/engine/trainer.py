"""The modality-agnostic training engine.

``Trainer(method, dataset, config, run_dir, augmenter=...)`` trains any
:class:`~stec.methods.SSLMethod`. The dataset yields either raw items ``(x, label, index)``
that a batched, on-device ``augmenter`` turns into ``(view_a, view_b, params_a,
params_b)``, or those four (plus an optional label) directly. Everything a run makes lands
in ``run_dir``: ``config.json``, ``metrics.csv``, ``checkpoints/last.pt`` and
``export/`` (the backbone for downstream use).

Under ``torchrun`` every rank draws its own augmentations from streams seeded by
``(trainer.seed, rank)``, and the checkpoint keeps each rank's RNG state and augmenter
buffers. The step itself never waits for the GPU: host values (batch sizes, label counts)
travel over a CPU group, and a non-finite loss is recorded on the device and read at the
log and checkpoint steps, which synchronise anyway. (PyTorch's SyncBatchNorm, with
``sync_batchnorm`` under DDP, and the fp16 grad scaler do synchronise: docs/training.md.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from stec import distributed
from stec.engine.checkpoint import (
    RUN_CHECKPOINT,
    CheckpointError,
    ResumeRefused,
    continuing_overrides,
    load_checkpoint,
    load_module_state,
    rank_entry,
    save_checkpoint,
    training_changes,
)
from stec.engine.export import export_backbone
from stec.engine.finite import NonFiniteLossError, NonFiniteWatch
from stec.engine.logging import MetricLogger
from stec.engine.optim import build_optimizer, build_scheduler
from stec.engine.rng import LOADER_STREAM, capture_rng, restore_rng, seed_rank, stream_seed
from stec.engine.sampler import ResumableSampler, build_loader
from stec.engine.step import (
    StepPlan,
    augmentation_step,
    host_labels,
    mean_over_ranks,
    new_probe,
    plan_step,
    probe_step,
)
from stec.engine.stop import StopRequests
from stec.methods.base import SSLMethod, choose

log = logging.getLogger("stec")
AMP_MODES = ("off", "bf16", "fp16")
__all__ = [
    "NonFiniteLossError",
    "Trainer",
    "TrainerConfig",
    "resolve_device",
    "with_trainer_defaults",
]


@dataclass
class TrainerConfig:
    """Training-loop settings (the ``trainer`` config group). ``batch_size`` is per process."""

    epochs: int = 10
    max_steps: int = 0  # > 0 caps the run at this many optimiser steps
    batch_size: int = 64
    optimizer: str = "adamw"  # lars | sgd | adamw
    lr: float = 1e-3
    weight_decay: float = 1e-6
    momentum: float = 0.9
    trust_coefficient: float = 0.001  # LARS η: the LARS paper's and the official S-TEC value
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    amp: str = "off"  # off | bf16 | fp16 (CUDA only)
    grad_clip: float = 0.0
    compile: bool = False
    checkpoint_every: int = 200  # steps; a checkpoint is also written at the end
    log_every: int = 10
    num_workers: int = 0
    persistent_workers: bool = True  # keep the loader workers alive between epochs
    prefetch_factor: int = 2  # batches each loader worker prepares ahead
    pin_memory: bool = True  # page-locked batches, copied to CUDA asynchronously
    seed: int = 0
    device: str = "auto"
    resume: str = ""  # "", "auto" (run_dir/checkpoints/last.pt) or a path
    overwrite: bool = False  # the CLIs: start afresh in a run_dir that holds a run
    sync_batchnorm: bool = False
    online_probe: bool = True
    probe_lr: float = 1e-3
    progress: bool = True

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown trainer key(s) {unknown}; allowed keys: {', '.join(sorted(known))}"
            )
        return cls(**values)


def with_trainer_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A run config with its ``trainer`` section completed by :class:`TrainerConfig`'s
    defaults, which a run takes for the keys its config leaves out: how the Trainer records
    a run's settings, so that configs written with and without those keys compare equal."""
    section = config.get("trainer")
    if not isinstance(section, dict):
        return config
    return {**config, "trainer": {**asdict(TrainerConfig()), **section}}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    return torch.device(name)


class Trainer:
    def __init__(
        self,
        method: SSLMethod,
        dataset: Dataset,
        config: TrainerConfig,
        run_dir: str | Path,
        augmenter: nn.Module | None = None,
        collate_fn: Callable | None = None,
        num_classes: int = 0,
        run_config: dict[str, Any] | None = None,
        export_meta: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = config
        choose("trainer.amp", config.amp, AMP_MODES)
        self.run_dir = Path(run_dir)
        self.device = resolve_device(config.device)
        self.method = method.to(self.device)
        self.augmenter = augmenter.to(self.device) if augmenter is not None else None
        # what the checkpoint records and a resume compares: the caller's run config with
        # the trainer settings actually used (they win over its own "trainer" section)
        self.run_config = {**(run_config or {}), "trainer": asdict(config)}
        self.export_meta = export_meta or {}
        self.is_main = distributed.is_main()
        self.rank, self.world = distributed.rank(), distributed.world_size()
        distributed.host_group()  # made here, where every rank is
        if config.sync_batchnorm and distributed.is_distributed():
            self.method = nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        self.sampler = ResumableSampler(len(dataset), shuffle=True, seed=config.seed)
        # reseeded every epoch from (seed, rank, epoch): it draws the workers' base seed
        self.loader_generator = torch.Generator()
        self.loader = build_loader(
            dataset,
            self.sampler,
            config.batch_size,
            workers=config.num_workers,
            persistent_workers=config.persistent_workers,
            prefetch_factor=config.prefetch_factor,
            pin_memory=config.pin_memory and self.device.type == "cuda",
            collate_fn=collate_fn,
            generator=self.loader_generator,
        )
        self.steps_per_epoch = self.sampler.per_rank // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"trainer.batch_size={config.batch_size} is larger than the {self.sampler.per_rank} "
                "samples per process: lower the batch size"
            )
        self.total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps > 0:
            self.total_steps = (
                min(self.total_steps, config.max_steps) if config.epochs > 0 else config.max_steps
            )
        self.model: nn.Module = self.method
        if distributed.is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.method, device_ids=ids)
        self.step_fn = torch.compile(self.model) if config.compile else self.model
        self.optimizer = build_optimizer(
            self.method,
            config.optimizer,
            config.lr,
            config.weight_decay,
            config.momentum,
            trust_coefficient=config.trust_coefficient,
        )
        self.scheduler = build_scheduler(
            self.optimizer, self.total_steps, config.warmup_steps, config.min_lr_ratio
        )
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        if self.amp_dtype is not None and self.device.type != "cuda":
            log.warning(
                "trainer.amp=%s needs CUDA; training in float32 on %s", config.amp, self.device
            )
            self.amp_dtype = None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.probe: nn.Linear | None = None
        if config.online_probe and num_classes > 0:
            self.probe = new_probe(method.feature_dim, num_classes, config.seed, self.device)
            self.probe_opt = torch.optim.Adam(self.probe.parameters(), lr=config.probe_lr)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.saved_step: int | None = None
        self.stop_requests, self._stopped = StopRequests(), False
        self.non_finite = NonFiniteWatch(self.device)
        seed_rank(config.seed, self.rank)

    # ----------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / RUN_CHECKPOINT

    def rank_state(self) -> dict[str, Any]:
        """This process's own state: its RNG streams and augmenter buffers, on the CPU."""
        state: dict[str, Any] = {"rng": capture_rng(self.device)}
        if self.augmenter is not None:
            state["augmenter"] = {
                k: v.detach().cpu() for k, v in self.augmenter.state_dict().items()
            }
        return state

    def state_dict(self, ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The replicated training state plus ``ranks``, every process's own state in rank
        order (this process's alone when not given)."""
        state = {
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "sampler_seed": self.sampler.seed,
            "sampler_order": self.sampler.order,
            "world_size": self.world,
            "ranks": ranks if ranks is not None else [self.rank_state()],
            "config": self.run_config,
        }
        if self.probe is not None:
            state["probe"] = self.probe.state_dict()
            state["probe_optimizer"] = self.probe_opt.state_dict()
        return state

    def save(self) -> Path | None:
        """Write the checkpoint (rank 0, with every rank's own state gathered to it).
        Collective: every rank calls it. Refuses after a non-finite step."""
        self.check_finite()
        ranks = distributed.gather_to_main(self.rank_state())
        self.saved_step = self.step
        if not self.is_main:
            return None
        return save_checkpoint(self.checkpoint_path, self.state_dict(ranks))

    def resume(self, path: str | Path) -> None:
        path = self.checkpoint_path if str(path) == "auto" else Path(path)
        if str(self.cfg.resume) == "auto" and not path.exists():
            log.info("trainer.resume=auto: no checkpoint at %s, starting fresh", path)
            return
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:  # damaged, foreign or gone: say how to go on
            raise CheckpointError(
                f"{err}; it cannot be resumed: start afresh in a new run_dir=..., or replace "
                "this run with trainer.overwrite=true instead of trainer.resume"
            ) from err
        saved = with_trainer_defaults(state.get("config") or {})
        changes = training_changes(saved, self.run_config)
        if changes:
            overrides = continuing_overrides(saved, self.run_config)
            raise ResumeRefused(
                f"checkpoint {path} was trained with other settings than this run: "
                f"{'; '.join(changes)}. Resume with the checkpoint's settings (a resume may "
                f"change only the budget, the loader, logging, devices, where the data lies "
                f"and the evaluation: docs/training.md), or start afresh: train into a new "
                f"run_dir without trainer.resume"
                + (f"; or add {' '.join(overrides)} to continue it" if overrides else ""),
                trained=state.get("config"),
            )
        if state["step"] > self.total_steps:  # its weights would be sold as this budget's
            raise ResumeRefused(
                f"checkpoint {path} is at step {state['step']}, past this run's budget of "
                f"{self.total_steps} steps (trainer.epochs={self.cfg.epochs}, "
                f"trainer.max_steps={self.cfg.max_steps}): resume with at least its budget, or "
                f"start afresh: train into a new run_dir without trainer.resume"
            )
        mine = rank_entry(state, path, self.rank, self.world)
        load_module_state(self.method, state["model"], path, "model")
        if self.augmenter is not None and mine.get("augmenter") is not None:
            load_module_state(self.augmenter, mine["augmenter"], path, "augmenter")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            # the schedule follows this run's budget (a resume may extend trainer.epochs)
            for schedule in self.scheduler.lr_lambdas:
                schedule.total_steps = self.total_steps
                schedule.warmup_steps = self.cfg.warmup_steps
                schedule.min_ratio = self.cfg.min_lr_ratio
            self.scaler.load_state_dict(state["scaler"])
            if self.probe is not None and "probe" in state:
                self.probe.load_state_dict(state["probe"])
                self.probe_opt.load_state_dict(state["probe_optimizer"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(
                f"checkpoint {path}: optimiser state does not fit this run ({err})"
            ) from err
        # a run keeps the data order it started with (checkpoints without the key predate
        # the sampler's streams), so that it resumes exactly
        self.sampler.order = state.get("sampler_order", "seed+epoch")
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_in_epoch, self.saved_step = state["batch_in_epoch"], state["step"]
        self.non_finite.start_at(self.step)
        restore_rng(mine["rng"], self.device)
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)

    # ----------------------------------------------------------------- training
    def plan(self, batch) -> StepPlan:
        """The step every rank agrees on (see :func:`~stec.engine.step.plan_step`)."""
        return plan_step(
            batch,
            raw=self.augmenter is not None,
            count_labels=self.probe is not None,
            stop=self.stop_requests.received is not None,
        )

    def _agree_to_stop(self) -> bool:
        """Whether any rank was asked to stop (a host exchange: every rank calls it)."""
        asked = int(self.stop_requests.received is not None)
        return any(row[0] for row in distributed.all_gather_host([asked]))

    def _unpack(self, batch) -> tuple[Tensor, Tensor, dict, dict, Tensor | None]:
        move = lambda t: t.to(self.device, non_blocking=True)  # noqa: E731
        if self.augmenter is not None:
            x = move(batch[0])
            with augmentation_step(self.augmenter):
                view_a, view_b, params_a, params_b = self.augmenter(x)
        else:
            view_a, view_b, params_a, params_b = batch[:4]
            view_a, view_b = move(view_a), move(view_b)
            params_a = {k: move(v) for k, v in params_a.items()}
            params_b = {k: move(v) for k, v in params_b.items()}
        labels = host_labels(batch, raw=self.augmenter is not None)
        return view_a, view_b, params_a, params_b, None if labels is None else move(labels)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` if a step so far had a non-finite loss. Reads
        the device: called at the log and checkpoint steps, which wait for it anyway."""
        last = "none (no checkpoint yet)"
        if self.saved_step is not None and self.checkpoint_path.exists():
            last = f"{self.checkpoint_path} (step {self.saved_step})"
        self.non_finite.raise_if_bad(self.step, last)

    def train_step(self, batch, plan: StepPlan | None = None) -> dict[str, Tensor]:
        """One optimiser step. Nothing in the engine reads a value back from the device
        (SyncBatchNorm under DDP and the fp16 scaler do: docs/training.md)."""
        plan = plan or self.plan(batch)
        view_a, view_b, params_a, params_b, labels = self._unpack(batch)
        self.method.train()
        self.method.set_progress(self.step / max(self.total_steps, 1))
        with self._autocast(), distributed.batch_sizes(plan.sizes):
            loss, metrics, features = self.step_fn(view_a, view_b, params_a, params_b)
        self.non_finite.record(loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            metrics["grad_norm"] = nn.utils.clip_grad_norm_(
                self.method.parameters(), self.cfg.grad_clip
            ).detach()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.method.on_step_end((self.step + 1) / max(self.total_steps, 1))
        if self.probe is not None and labels is not None and plan.labelled > 0:
            metrics["online_probe_acc"] = probe_step(
                self.probe, self.probe_opt, features, labels, plan.labelled
            )
        return metrics

    def fit(self) -> dict[str, float]:
        """Train to ``total_steps`` (resuming if configured); returns the last metrics."""
        if self.cfg.resume:
            self.resume(self.cfg.resume)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(
                json.dumps(self.run_config, indent=2, default=str)
            )
        last: dict[str, float] = {}
        tick, seen = time.perf_counter(), 0
        with self.stop_requests, contextlib.ExitStack() as cleanup:
            logger = bar = None
            if self.is_main:
                resume_step = self.step if self.cfg.resume else None
                logger = MetricLogger(self.run_dir, resume_step=resume_step)
                cleanup.callback(logger.close)
            if self.is_main and self.cfg.progress:
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=self.total_steps, initial=self.step, desc="pretrain", dynamic_ncols=True
                )
                cleanup.callback(bar.close)
            while self.step < self.total_steps and not self._stopped:
                self.sampler.set_epoch(self.epoch)
                self.sampler.set_start(self.batch_in_epoch * self.cfg.batch_size)
                self.loader_generator.manual_seed(
                    stream_seed(self.cfg.seed, self.rank, LOADER_STREAM, self.epoch)
                )
                for batch in self.loader:
                    plan = self.plan(batch)
                    if plan.stop:  # every rank leaves at this same step
                        self._stopped = True
                        break
                    # counted even when skipped, so that a resumed run starts at the right batch
                    self.batch_in_epoch += 1
                    if not plan.usable:
                        continue
                    metrics = self.train_step(batch, plan)
                    self.step += 1
                    seen += sum(plan.sizes)
                    if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
                        self.check_finite()
                        now = time.perf_counter()
                        last = mean_over_ranks(metrics, self.device)
                        last.update(
                            step=self.step,
                            epoch=self.epoch,
                            lr=self.optimizer.param_groups[0]["lr"],
                        )
                        last["samples_per_s"] = seen / max(now - tick, 1e-9)
                        tick, seen = now, 0
                        if logger is not None:
                            logger.log(last)
                        if bar is not None:
                            bar.set_postfix(_postfix(last), refresh=False)
                    if bar is not None:
                        bar.update(1)
                    if self.step % self.cfg.checkpoint_every == 0 and self.step < self.total_steps:
                        self.save()
                    if self.step >= self.total_steps:
                        break
                else:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    self._stopped = self._agree_to_stop()
            self.save()
            if self._stopped:
                log.warning(
                    "stopped by a signal at step %d; checkpoint saved to %s",
                    self.step,
                    self.checkpoint_path,
                )
            elif self.is_main:
                export_backbone(self.method.backbone, self.run_dir / "export", self.export_meta)
        return last

    @property
    def stopped_early(self) -> bool:
        return self._stopped


def _postfix(metrics: dict[str, float]) -> dict[str, str]:
    out = {"loss": f"{metrics.get('loss', math.nan):.3f}"}
    accs = [v for k, v in metrics.items() if k.startswith("action_acc/") and math.isfinite(v)]
    if accs:
        out["act_acc"] = f"{sum(accs) / len(accs):.2f}"
    if "samples_per_s" in metrics:
        out["samples/s"] = f"{metrics['samples_per_s']:.0f}"
    return out
