"""The training engine: trainer, optimisers and schedule, checkpoints, export."""

from stec.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stec.engine.export import export_backbone, load_export
from stec.engine.optim import LARS, build_optimizer, warmup_cosine
from stec.engine.trainer import NonFiniteLossError, Trainer, TrainerConfig

__all__ = [
    "LARS",
    "CheckpointError",
    "NonFiniteLossError",
    "Trainer",
    "TrainerConfig",
    "build_optimizer",
    "export_backbone",
    "load_checkpoint",
    "load_export",
    "save_checkpoint",
    "warmup_cosine",
]
