"""Segmentation training memory and time: mdeq_seg_tiny against its explicit baseline
hrnet_seg_tiny (the same blocks, not weight-tied, 4 cells; parameters within 1.2%), on 64x64
scenes, side by side with peak training memory.

Rows: the MDEQ as its recipe trains it (Anderson, 8 iterations, phantom gradient of 1 step),
the MDEQ with the exact implicit gradient (a backward solve), and the explicit network at its
shipped depth 4 and at depth 8. ``saved_mib``: the distinct storages autograd saves for the
backward during one forward (parameters excluded; exact, machine-independent). ``peak_mib``:
peak anonymous RSS over the baseline (noisy on CPU) or ``torch.cuda.max_memory_allocated``.
Each configuration runs in a fresh subprocess.

Run: python bench/segmentation.py [--quick]; writes bench/results/segmentation.{json,md}.
"""

from __future__ import annotations

from _cells import report
from _harness import parser, run_child, setup


def child(kind: str, batch: int, size: int, device: str) -> dict:
    """One configuration, run in a fresh interpreter by ``run_child``."""
    import torch

    import zoo

    torch.set_num_threads(2)
    solver = {"name": "anderson", "m": 5, "tol": 1e-3, "max_iter": 8}
    if kind == "mdeq_phantom":
        model = zoo.create_model(
            "mdeq_seg_tiny", solver=solver, grad={"name": "phantom", "steps": 1}
        )
    elif kind == "mdeq_implicit":
        model = zoo.create_model(
            "mdeq_seg_tiny", solver=solver, grad={"name": "implicit", "tol": 1e-3, "max_iter": 8}
        )
    else:
        model = zoo.create_model("hrnet_seg_tiny", depth=int(kind.rsplit("_", 1)[1]))
    model = model.to(device).train()
    x = torch.randn(batch, 1, size, size, device=device)
    y = torch.randint(0, 11, (batch, size, size), device=device)

    def loss():
        return torch.nn.functional.cross_entropy(model(x), y)

    def step():
        loss().backward()

    step()  # warm-up (allocator, lazy init)
    model.zero_grad(set_to_none=True)
    from _memprobe import measure, saved_mib

    saved = saved_mib(model, loss)
    p, sec = measure(step, device)
    c = model.cost()
    return {
        "model": kind,
        "params": model.num_params(),
        "nfe_forward": c.nfe_forward,
        "nfe_backward": c.nfe_backward,
        "saved_mib": round(saved, 1),
        "peak_mib": round(p, 1),
        "step_s": round(sec, 3),
    }


COLS = ["model", "params", "nfe_forward", "nfe_backward", "saved_mib", "saved_vs_hrnet_4"]
COLS += ["peak_mib", "step_s"]
KINDS = ("mdeq_phantom", "mdeq_implicit", "hrnet_4", "hrnet_8")


def main(argv=None) -> list[dict]:
    p = parser(__doc__, "segmentation.json")
    a = setup(p.parse_args(argv))
    batch, size = (2, 16) if a.quick else (32, 64)
    rows = []
    for kind in KINDS:
        rows.append(run_child(child, kind, batch, size, a.device))
        print(rows[-1], flush=True)
    base = next(r for r in rows if r["model"] == "hrnet_4")
    for r in rows:
        r["saved_vs_hrnet_4"] = round(r["saved_mib"] / max(base["saved_mib"], 1e-9), 3)
    report(rows, COLS, a.out)
    return rows


if __name__ == "__main__":
    main()
