"""Test doubles that prove device handling on a machine without a GPU.

The meta device holds no data, so a function that ends in numbers cannot finish there.
:class:`DeviceRecorder` wraps a real module: on every call it records the devices of its
tensor inputs and of its own parameters and buffers, runs the wrapped module (which
raises on a mixed-device operation), and, as the last module of a computation, hands a
meta result back as CPU zeros of the same shape, so that the caller can go on. A function
that leaves the module on the CPU while it sends the data to ``device="meta"`` is caught
by the record (or by the wrapped module).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import Any

import torch
from torch import Tensor, nn


def tensors_in(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in tensors_in(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    return []


def to_host(value: Any) -> Any:
    """Meta tensors (in any nesting) -> CPU zeros of the same shape and dtype."""
    if isinstance(value, Tensor):
        return torch.zeros(value.shape, dtype=value.dtype) if value.is_meta else value
    if isinstance(value, Mapping):
        return {k: to_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_host(v) for v in value)
    return value


class DeviceRecorder(nn.Module):
    """``inner`` plus a record of ``(input devices, own devices)`` per call in ``calls``.

    Attributes the wrapper lacks are looked up on ``inner`` (e.g. ``method.inverse``).
    ``host_output=False`` returns the result as it is (for a module whose output feeds
    another one, such as a transform).
    """

    def __init__(self, inner: nn.Module, host_output: bool = True) -> None:
        super().__init__()
        self.inner = inner
        self.host_output = host_output
        self.calls: list[tuple[set[str], set[str]]] = []

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "inner":
                raise
            return getattr(self.inner, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        inputs = {str(t.device) for t in tensors_in([args, kwargs])}
        own = {str(t.device) for t in chain(self.parameters(), self.buffers())}
        self.calls.append((inputs, own))
        out = self.inner(*args, **kwargs)
        return to_host(out) if self.host_output else out

    def devices_seen(self) -> set[str]:
        """Every device an input or a parameter/buffer was on, over all calls."""
        return {d for inputs, own in self.calls for d in inputs | own}


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    """Copies of every parameter and buffer, to check that they come back unchanged."""
    return {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()}


def assert_unchanged(module: nn.Module, before: dict[str, Tensor]) -> None:
    after = module.state_dict(keep_vars=True)
    assert set(after) == set(before)
    for name, value in before.items():
        assert after[name].device == value.device, name
        assert torch.equal(after[name].detach(), value), name
