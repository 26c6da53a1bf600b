"""Trains the toy problem in a fresh process (for the kill/resume and signal tests).

python -m tests.core.run_toy RUN_DIR [--resume] [--kill-at STEP] [--wait-at STEP]
"""

import argparse
import os
import signal
import sys
import time

import torch

from stec import build_method
from stec.engine.trainer import Trainer, TrainerConfig
from tests.core.toy import ToyBackbone, ToySignals, toy_augmenter


class ScriptedTrainer(Trainer):
    kill_at = 0
    wait_at = 0

    def train_step(self, batch, plan=None):
        metrics = super().train_step(batch, plan)
        if self.step + 1 == self.kill_at:  # self.step is incremented after train_step returns
            os.kill(os.getpid(), signal.SIGKILL)
        if self.step + 1 == self.wait_at:
            print("WAITING", flush=True)
            time.sleep(30)
        return metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--wait-at", type=int, default=0)
    parser.add_argument("--method", default="byol")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    aug = toy_augmenter()
    method = build_method(
        args.method,
        ToyBackbone(),
        32,
        action_space=aug.action_space(),
        efference="both",
        lambda_manip_warmup=0.5,  # mid-ramp at the kill: the resumed weight must follow the step
        read_gate=0.05,  # the gate's running means must resume too
        proj_hidden=32,
        proj_dim=16,
        inverse_hidden=32,
        action_embed_dim=8,
    )
    cfg = TrainerConfig(
        epochs=3,
        batch_size=16,
        optimizer="lars",
        lr=0.5,
        warmup_steps=3,
        checkpoint_every=5,
        log_every=2,
        progress=False,
        num_workers=args.workers,
        resume="auto" if args.resume else "",
    )
    ScriptedTrainer.kill_at, ScriptedTrainer.wait_at = args.kill_at, args.wait_at
    trainer = ScriptedTrainer(
        method,
        ToySignals(n=80),
        cfg,
        args.run_dir,
        augmenter=aug,
        num_classes=4,
        run_config={"method": args.method},
    )
    trainer.fit()
    print("STOPPED_EARLY" if trainer.stopped_early else "FINISHED", trainer.step, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
