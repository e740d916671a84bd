"""Memory of one training step: process RSS, CUDA allocator peaks, and activations saved for backward.

- Peak RSS: ``getrusage(RUSAGE_SELF).ru_maxrss`` is KiB on Linux and bytes on macOS (getrusage(2) of each).
  It is the process's lifetime high-water mark, so the step's own peak is also sampled (current RSS from
  ``/proc/self/statm`` on Linux, ``psutil`` elsewhere) every 2 ms on a background thread.
- CUDA: ``reset_peak_memory_stats`` before the step, then ``max_memory_allocated``/``max_memory_reserved``.
- Activations: ``torch.autograd.graph.saved_tensors_hooks`` sees every tensor autograd keeps for backward;
  distinct storages are summed, parameters and the example inputs left out (they exist without the step).
"""

from __future__ import annotations

import os
import sys
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from .._optional import has
from ._hooks import ModuleStack

_KIB = 1024


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size in bytes (None where ``resource`` does not exist)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * _KIB  # macOS: bytes; Linux/BSD: KiB


def current_rss_bytes() -> int | None:
    if sys.platform.startswith("linux"):
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    if has("psutil"):
        import psutil

        return int(psutil.Process().memory_info().rss)
    return None


class _RssSampler(threading.Thread):
    def __init__(self, interval_s: float = 0.002) -> None:
        super().__init__(daemon=True, name="layerscope-rss-sampler")
        self.interval_s = interval_s
        self.peak = current_rss_bytes() or 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.peak = max(self.peak, current_rss_bytes() or 0)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, current_rss_bytes() or 0)


@dataclass
class MemoryReport:
    device: str
    activation_bytes: int | None  # distinct storages saved for backward (no parameters, no inputs);
    # None when no backward was asked for
    activation_bytes_by_layer: dict[str, int] = field(default_factory=dict)  # innermost module that saved
    rss_before_bytes: int | None = None
    rss_step_peak_bytes: int | None = None  # max(sampled RSS, new high-water mark) during the step
    rss_increase_bytes: int | None = None  # step peak − RSS before
    peak_rss_bytes: int | None = None  # process lifetime high-water mark after the step
    cuda_peak_allocated_bytes: int | None = None
    cuda_peak_reserved_bytes: int | None = None
    cuda_increase_bytes: int | None = None  # peak allocated − allocated before

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class MemoryProbe:
    """``with MemoryProbe(device, stack, exclude) as m: <one step>``, then ``m.report``."""

    def __init__(self, device: torch.device, stack: ModuleStack, exclude: list[torch.Tensor],
                 track_activations: bool = True) -> None:
        self.device, self.stack = device, stack
        self._exclude = {_storage_key(t) for t in exclude}
        self._seen: set[Any] = set()
        self._by_layer: dict[str, int] = defaultdict(int)
        self._hooks = (torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
                       if track_activations else None)
        self._real = device.type != "meta"
        self.report: MemoryReport | None = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in self._exclude and key not in self._seen:
            self._seen.add(key)
            self._by_layer[self.stack.current() or ""] += t.untyped_storage().nbytes()
        return t  # observe only: autograd keeps the tensor as it would have

    def __enter__(self) -> MemoryProbe:
        self._before = current_rss_bytes() if self._real else None
        self._hwm_before = peak_rss_bytes() if self._real else None
        self._sampler = _RssSampler() if self._before is not None else None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._cuda_before = torch.cuda.memory_allocated(self.device)
        if self._sampler:
            self._sampler.start()
        if self._hooks:
            self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._hooks:
            self._hooks.__exit__(*exc)
        saved = sum(self._by_layer.values()) if self._hooks else None
        r = MemoryReport(str(self.device), saved, dict(self._by_layer))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            r.cuda_peak_allocated_bytes = int(torch.cuda.max_memory_allocated(self.device))
            r.cuda_peak_reserved_bytes = int(torch.cuda.max_memory_reserved(self.device))
            r.cuda_increase_bytes = r.cuda_peak_allocated_bytes - self._cuda_before
        if self._sampler:
            sampled = self._sampler.stop()
            hwm = peak_rss_bytes()
            rose = hwm is not None and self._hwm_before is not None and hwm > self._hwm_before
            r.rss_before_bytes, r.peak_rss_bytes = self._before, hwm
            r.rss_step_peak_bytes = max(sampled, hwm) if rose and hwm is not None else sampled
            r.rss_increase_bytes = max(0, r.rss_step_peak_bytes - (self._before or 0))
        elif self._real:
            r.peak_rss_bytes = peak_rss_bytes()
        self.report = r


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


def _storage_key(t: torch.Tensor) -> Any:
    storage = t.untyped_storage()
    if t.device.type == "meta":  # every meta storage has data_ptr 0: key by the storage object itself
        return ("meta", storage._cdata)
    return (t.device.type, storage.data_ptr())
