"""Workers for the 2-process DDP tests (spawned; must be importable)."""

import contextlib
import os
import random
import signal

import numpy as np
import torch
import torch.distributed as dist

from stec import build_method
from stec.engine.trainer import Trainer, TrainerConfig
from tests.core.toy import ToyBackbone, ToySignals, toy_augmenter

GLOBAL_BATCH = 16


def leave() -> None:
    """End a rank's part once every rank is done: a rank that tears its process group down
    while the other still has traffic in flight can abort in gloo's threads (seen once:
    "terminate called without an active exception")."""
    dist.barrier()
    dist.destroy_process_group()


def make_method(name: str, **kwargs):
    """``name``: a method, or ``<method>+own`` for its forward model's own head, or
    ``<method>+gate`` for the inverse model's read gate, half open on every target."""
    torch.manual_seed(0)
    aug = toy_augmenter()
    name, _, option = name.partition("+")
    head = "own" if option == "own" else "shared"
    if option == "gate":
        kwargs = {**kwargs, "read_gate": 0.05}
    method = build_method(
        name,
        ToyBackbone(norm=False),
        32,
        action_space=aug.action_space(),
        efference="both",
        norm="none",
        proj_hidden=32,
        proj_dim=16,
        inverse_hidden=32,
        action_embed_dim=8,
        forward_head=head,
        **kwargs,
    )
    if option == "gate":
        method.inverse.read_margin.fill_(0.045)  # READ_MARGIN + half of 0.05
    return method, aug


def fixed_batch():
    torch.manual_seed(123)
    aug = toy_augmenter()
    return aug(ToySignals(n=GLOBAL_BATCH).x.unsqueeze(1))


def local_slice(batch, rank: int, world: int):
    view_a, view_b, p_a, p_b = batch
    n = GLOBAL_BATCH // world
    sl = slice(rank * n, (rank + 1) * n)
    return (
        view_a[sl],
        view_b[sl],
        {k: v[sl] for k, v in p_a.items()},
        {k: v[sl] for k, v in p_b.items()},
    )


def gradients(model, method_name, batch):
    loss, _, _ = model(*batch)
    loss.backward()
    return loss.detach(), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


def worker(rank: int, world: int, init_file: str, method_name: str, out: str, run_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    method, _ = make_method(method_name)
    ddp = torch.nn.parallel.DistributedDataParallel(method)
    loss, _ = gradients(ddp, method_name, local_slice(fixed_batch(), rank, world))
    dist.all_reduce(loss)
    grads = {
        n.removeprefix("module."): p.grad.clone()
        for n, p in ddp.named_parameters()
        if p.grad is not None
    }
    # a short Trainer run under DDP keeps the replicas identical, the efference copy's
    # weight ramping up on every rank alike (a buffer, which DDP also broadcasts)
    method2, aug = make_method(method_name, lambda_manip_warmup=0.5)
    cfg = TrainerConfig(epochs=1, max_steps=3, batch_size=8, progress=False, checkpoint_every=2)
    Trainer(method2, ToySignals(n=40), cfg, run_dir, augmenter=aug, num_classes=4).fit()
    flat = torch.cat([p.detach().flatten() for p in method2.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        torch.save(
            {
                "loss": loss / world,
                "grads": grads,
                "replicas_equal": torch.equal(gathered[0], gathered[1]),
            },
            out,
        )
    leave()


# --------------------------------------------------------------------------- per-rank streams
class DrawingSignals(ToySignals):
    """Toy items plus three numbers drawn in the loader worker (torch, numpy, Python)."""

    def __getitem__(self, i: int):
        x, label, index = super().__getitem__(i)
        draws = torch.tensor([torch.rand(()).item(), np.random.rand(), random.random()])
        return x, label, index, draws


class Recorder(torch.nn.Module):
    """Wraps an augmenter and keeps the parameters of every view it makes."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.params = inner, []

    def forward(self, x):
        out = self.inner(x)
        self.params.append({k: torch.cat([out[2][k], out[3][k]]) for k in out[2]})
        return out


class FirstBatch(Trainer):
    first = None

    def train_step(self, batch, *args):
        self.first = self.first if self.first is not None else batch[3].clone()
        return super().train_step(batch, *args)


def worker_streams(rank: int, world: int, init_file: str, out: str, run_dir: str) -> None:
    """Every rank trains 2 steps with the same trainer.seed; rank 0 saves what each drew."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    method, aug = make_method("simclr")
    recorder = Recorder(aug)
    cfg = TrainerConfig(epochs=1, max_steps=2, batch_size=4, num_workers=1, progress=False)
    trainer = FirstBatch(method, DrawingSignals(n=16), cfg, run_dir, augmenter=recorder)
    trainer.fit()
    mine = {"params": recorder.params, "worker_draws": trainer.first}
    everyone = [None] * world
    dist.all_gather_object(everyone, mine)
    if rank == 0:
        torch.save(everyone, out)
    leave()


# --------------------------------------------------------------------------- kill and resume
class Interrupted(Exception):
    pass


class Killable(Trainer):
    """Stops dead (no checkpoint) once ``kill_at`` steps are done, like a SIGKILL."""

    kill_at = 0

    def train_step(self, batch, *args):
        metrics = super().train_step(batch, *args)
        if self.step + 1 == self.kill_at:
            raise Interrupted
        return metrics


def worker_resume(
    rank: int, world: int, init_file: str, run_dir: str, kill_at: int, resume: bool
) -> None:
    """SimCLR + inverse model on log-mel clips through the mixup bank, 12 steps under DDP."""
    from tests.core.audio_toy import CropBackbone, LogMels, audio_augmenter

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    aug = audio_augmenter(n_memory=24)
    method = build_method(
        "simclr",
        CropBackbone(),
        32,
        action_space=aug.action_space(),
        efference="inverse",
        proj_hidden=32,
        proj_dim=16,
        inverse_hidden=32,
    )
    cfg = TrainerConfig(
        epochs=2,
        batch_size=4,
        checkpoint_every=4,
        log_every=3,
        progress=False,
        resume="auto" if resume else "",
    )
    Killable.kill_at = kill_at
    trainer = Killable(method, LogMels(n=48), cfg, run_dir, augmenter=aug, num_classes=3)
    with contextlib.suppress(Interrupted):
        trainer.fit()
    leave()


# --------------------------------------------------------------------------- host values only
def worker_host_values(rank: int, world: int, init_file: str, out: str) -> None:
    """Ranks with different batch sizes gather negatives and agree on skipping, while every
    way of reading a tensor value on the host raises."""
    from unittest import mock

    from stec.distributed import gather_with_grad
    from stec.engine.step import plan_step

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    rows = 3 if rank == 0 else 5
    z = torch.arange(rows * 2, dtype=torch.float32).reshape(rows, 2) + 100 * rank
    z.requires_grad_(True)

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor value was read on the host")

    names = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")
    with mock.patch.multiple(torch.Tensor, **{name: refuse for name in names}):
        gathered, offset = gather_with_grad(z)
        (gathered * (1 + torch.arange(len(gathered))[:, None])).sum().backward()
        full = plan_step((torch.zeros(rows, 1),), raw=True, count_labels=False)
        lonely = plan_step((torch.zeros(1 + rank, 1),), raw=True, count_labels=False)
    result = {
        "gathered": gathered.detach(),
        "offset": offset,
        "grad": z.grad,
        "full": (full.usable, full.sizes),
        "lonely": (lonely.usable, lonely.sizes),
    }
    everyone = [None] * world
    dist.all_gather_object(everyone, result)
    if rank == 0:
        torch.save(everyone, out)
    leave()


# --------------------------------------------------------------------------- a stop signal
class SignalledOnRankOne(Trainer):
    """SIGTERM reaches rank 1 alone, during its third step."""

    def train_step(self, batch, *args):
        metrics = super().train_step(batch, *args)
        if dist.get_rank() == 1 and self.step + 1 == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return metrics


def worker_stop(rank: int, world: int, init_file: str, run_dir: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    method, aug = make_method("simclr")
    cfg = TrainerConfig(epochs=2, batch_size=4, checkpoint_every=100, progress=False)
    trainer = SignalledOnRankOne(method, ToySignals(n=40), cfg, run_dir, augmenter=aug)
    trainer.fit()
    everyone = [None] * world
    dist.all_gather_object(everyone, (trainer.step, trainer.stopped_early))
    if rank == 0:
        torch.save(everyone, out)
    leave()
