"""Reversible DEQs against the implicit gradient, on the trained cells of two shipped models.

For ``mdeq_tiny.cifar10`` (a batch of its shipped CIFAR-10 sample) and
``deq_transformer_tiny.shakespeare_char`` (a batch of its shipped text), one training step
(forward and backward, the model in training mode) with

* ``reversible``: ``Reversible(beta=0.5)`` (the default) for K steps and ``ReversibleGrad`` (the exact
  gradient of those steps, rebuilt backwards);
* ``implicit``: Anderson for K iterations and ``ImplicitGrad`` with a K-iteration backward
  solve, the shipped recipes' kind of gradient;

at K = 4, 8, 16 and 32 forward iterations. Columns: ``saved_mib`` (the storage autograd keeps
for the backward, exact and machine-independent), ``peak_mib`` (peak resident memory of the
step over the process baseline), ``step_s`` (median seconds), ``time_vs_implicit`` and the
reversible solve's ``reconstruction_error``. Targets: reversible memory flat within 5% from 4 to
32 iterations; a step at most 1.5x the implicit gradient's at equal forward iterations.

Run: python bench/reversible.py [--quick]
"""

from __future__ import annotations

import statistics
import time
import warnings

import torch
from _cells import report
from _harness import parser, setup
from _memprobe import measure, saved_mib

COLS = ["model", "grad", "iters", "saved_mib", "peak_mib", "step_s", "time_vs_implicit",
        "reconstruction_error"]  # fmt: skip


def _problem(name: str, batch: int):
    import zoo

    model = zoo.load(name).train()
    for m in model.modules():  # dropout off: the two modes see the same function
        if isinstance(m, torch.nn.Dropout) or type(m).__name__.endswith("Dropout"):
            m.p = 0.0
    if name.startswith("mdeq"):
        x, y = zoo.example_batch(model, batch)

        def loss():
            return torch.nn.functional.cross_entropy(model(x), y)

    else:
        x, y = zoo.example_batch(model, batch * (model.tgt_len + 1))
        x, y = x[:batch], y[:batch]

        def loss():
            logits = model(x)
            return torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
            )

    return model, loss


def _set_mode(model, grad: str, k: int) -> None:
    from zoo.solvers import Anderson, ImplicitGrad, Reversible, ReversibleGrad

    deq = model.deq
    if grad == "reversible":
        deq.solver = Reversible(beta=0.5, tol=0.0, max_iter=k, warn=False)
        deq.grad = ReversibleGrad()
    else:
        deq.solver = Anderson(m=5, tol=0.0, max_iter=k, warn=False)
        deq.grad = ImplicitGrad(tol=0.0, max_iter=k, on_unconverged="phantom")
    deq.eval_solver = None


def run(name: str, batch: int, iters, repeats: int) -> list[dict]:
    model, loss = _problem(name, batch)
    rows = []
    for k in iters:
        per = {}
        for grad in ("implicit", "reversible"):
            _set_mode(model, grad, k)

            def step():
                loss().backward()
                model.zero_grad(set_to_none=True)

            step()  # warm-up
            saved = saved_mib(model, loss)
            peak, _ = measure(step)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            row = {"model": name, "grad": grad, "iters": k, "saved_mib": round(saved, 2),
                   "peak_mib": round(peak, 1), "step_s": round(statistics.median(times), 4)}  # fmt: skip
            if grad == "reversible":
                row["reconstruction_error"] = float(f"{model.deq.stats.reconstruction_error:.2g}")
            per[grad] = row
        per["reversible"]["time_vs_implicit"] = round(
            per["reversible"]["step_s"] / per["implicit"]["step_s"], 3
        )
        rows += [per["implicit"], per["reversible"]]
        print(per["reversible"], flush=True)
    return rows


def main(argv=None) -> list[dict]:
    p = parser(__doc__, "reversible.json")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--iters", type=int, nargs="+", default=None, help="forward iterations K")
    a = setup(p.parse_args(argv))
    iters = tuple(a.iters) if a.iters else ((4, 8) if a.quick else (4, 8, 16, 32))
    batch_img, batch_txt, repeats = (4, 1, 1) if a.quick else (32, 4, a.repeats)
    warnings.simplefilter("ignore")
    rows = run("mdeq_tiny.cifar10", batch_img, iters, repeats)
    rows += run("deq_transformer_tiny.shakespeare_char", batch_txt, iters, repeats)
    for model in {r["model"] for r in rows}:
        rev = [r["saved_mib"] for r in rows if r["model"] == model and r["grad"] == "reversible"]
        spread = (max(rev) - min(rev)) / min(rev)
        print(
            f"{model}: reversible saved memory spread {spread:.1%} over {iters[0]}-{iters[-1]} iterations"
        )
    report(rows, COLS, a.out)
    return rows


if __name__ == "__main__":
    main()
