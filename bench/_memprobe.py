"""Peak memory of one call, for the benchmark child processes: anonymous resident memory
(RSS minus file-backed pages, polled every millisecond) over the value before the call, or
``torch.cuda.max_memory_allocated`` on a GPU."""

from __future__ import annotations

import os
import threading
import time

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") / 2**20


def anon_mib() -> float:
    _, res, shared = open("/proc/self/statm").read().split()[:3]
    return (int(res) - int(shared)) * _PAGE


def measure(fn, device: str = "cpu") -> tuple[float, float]:
    """Run ``fn()``; return (peak MiB over the baseline, seconds)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = anon_mib()
    peak, stop = [0.0], threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], anon_mib())
            time.sleep(0.001)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    stop.set()
    th.join()
    top = (
        torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else max(peak[0], anon_mib())
    )
    return top - base, sec


def saved_mib(model, loss_fn) -> float:
    """MiB of the distinct storages autograd saves for the backward during ``loss_fn()`` (one
    forward), parameters excluded: exact and machine-independent. Runs the backward after."""
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(n for ptr, n in seen.items() if ptr not in params) / 2**20
