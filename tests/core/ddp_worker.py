"""Worker for the 2-process DDP tests (spawned; must be importable)."""

import torch
import torch.distributed as dist

from stec import build_method
from stec.engine.trainer import Trainer, TrainerConfig
from tests.core.toy import ToyBackbone, ToySignals, toy_augmenter

GLOBAL_BATCH = 16


def make_method(name: str):
    torch.manual_seed(0)
    aug = toy_augmenter()
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
    )
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
    # a short Trainer run under DDP keeps the replicas identical
    method2, aug = make_method(method_name)
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
    dist.destroy_process_group()
