"""A detector of host synchronisations, for proving on a CPU machine that a training step
never makes the host wait for the GPU.

Run the step with the model and augmenter on ``device="meta"`` (tensors with shapes but no
data) inside :class:`HostSyncDetector`. Every operation that on a GPU would block the host
until the device catches up is recorded with the line of library code that asked for it:

- reading a value: ``item()``, ``bool()``, ``int()``, ``float()`` (all end in
  ``aten._local_scalar_dense``), ``torch.equal``;
- an output whose shape depends on the data: ``nonzero``, boolean-mask indexing
  ``x[mask]``, ``masked_select``, ``unique``, ``repeat_interleave`` with tensor repeats;
- ``multinomial``, whose CUDA kernel reads its probabilities back to validate them;
- a copy to the CPU (``.cpu()``, ``.tolist()``, ``.to("cpu")``).

Host tensors (the CPU batches from the loader, the optimiser's step counters) are not
device tensors and are ignored, exactly as on a GPU. A value read returns a stand-in
(True / 1 / 1.0) so that a step can go on past a sync in code outside the one under test;
a copy to the CPU returns zeros, and an op with a data-dependent shape goes on as if every
element were selected (or raises :class:`HostSync` where meta cannot do even that).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.fx.experimental._config
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("stec", "stec_audio", "stec_vision")

READS = {"aten._local_scalar_dense.default", "aten.equal.default"}
DATA_DEPENDENT = {
    "aten.nonzero.default",
    "aten.masked_select.default",
    "aten._unique.default",
    "aten._unique2.default",
    "aten.unique_dim.default",
    "aten.unique_consecutive.default",
    "aten.repeat_interleave.Tensor",
    "aten.repeat_interleave.self_Tensor",
}
VALIDATING = {"aten.multinomial.default"}
COPIES = {"aten._to_copy.default", "aten.copy_.default"}


class HostSync(RuntimeError):
    """An operation whose output shape depends on device data (the step cannot go on)."""


@dataclass(frozen=True)
class Sync:
    op: str
    site: str  # "package/file.py:line" of the innermost library frame

    @property
    def file(self) -> str:
        return self.site.rsplit(":", 1)[0]


def _site() -> str:
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename).resolve()
        try:
            rel = path.relative_to(ROOT)
        except ValueError:
            continue
        if rel.parts[0] in PACKAGES:
            return f"{rel.as_posix()}:{frame.lineno}"
    return "<outside the packages>"


def _mask_index(name: str, args) -> bool:
    """``x[mask]``: indexing with a boolean tensor (a hidden ``nonzero``)."""
    if name != "aten.index.Tensor":
        return False
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1]
    )


def _on_device(value) -> bool:
    return isinstance(value, torch.Tensor) and value.device.type != "cpu"


class HostSyncDetector(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[Sync] = []

    def files(self) -> set[str]:
        return {s.file for s in self.syncs}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        from_device = any(_on_device(t) for t in tensors)
        if name in COPIES and from_device:
            target = kwargs.get("device") if name == "aten._to_copy.default" else args[0].device
            if target is not None and torch.device(target).type == "cpu":
                self.syncs.append(Sync(name, _site()))
                if name == "aten.copy_.default":
                    return args[0]
                return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        elif from_device and (
            name in READS or name in DATA_DEPENDENT or name in VALIDATING or _mask_index(name, args)
        ):
            self.syncs.append(Sync(name, _site()))
            if name in DATA_DEPENDENT or name == "aten.index.Tensor":
                # go on as if every element were selected (shapes only; meta has no data)
                with torch.fx.experimental._config.patch(meta_nonzero_assume_all_nonzero=True):
                    try:
                        return func(*args, **kwargs)
                    except NotImplementedError as err:
                        raise HostSync(f"{name} at {self.syncs[-1].site}: {err}") from None
            if name == "aten._local_scalar_dense.default":
                dtype = args[0].dtype
                return True if dtype == torch.bool else (1.0 if dtype.is_floating_point else 1)
            if name == "aten.equal.default":
                return True
        return func(*args, **kwargs)
