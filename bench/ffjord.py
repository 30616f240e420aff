"""Continuous normalizing flows: three tables.

1. ``training``: one training iteration of each shipped 8gaussians flow at its final weights,
   batch 512 of training points: maximum likelihood (FFJORD), maximum likelihood with the RNODE
   terms (kinetic energy + Jacobian Frobenius, weights 0.01 each), and OT conditional flow
   matching (one field call, no solve). Field evaluations (NFE) of the forward pass per
   iteration (the mean of 10; ``--candidate`` adds a row for an exported, unshipped version) (these flows train by direct backprop, which runs back through the same
   evaluations), seconds per iteration, and the test NLL on the first 10,000 test points at the
   model's own tolerance, beside the true entropy (the floor, computed here by Monte Carlo of the
   known mixture with 10^6 points, and its standard error).
2. ``trace``: the cost of one dynamics evaluation (field + trace, with the graph a training step
   builds) with the exact trace (one backward pass per dimension) against Hutchinson's estimator
   (one), as the dimension grows from 2 to 784 (a Fashion-MNIST image).
3. ``images``: one training iteration (batch 64 Fashion-MNIST images from the shipped sample)
   of each shipped Fashion-MNIST flow, single-scale and multi-resolution field, by its own
   objective: forward NFE and seconds per iteration measured here; the steps its recipe's 2 hours
   bought (its shipped training log) and its test bits/dim and solve NFE (its card's
   ``model_cards/NAME.yaml``, from ``zoo card``) read from the files.
4. ``adjoint``: one training step of the 8gaussians flow with the adjoint against direct
   backprop through dopri5: activations saved for the backward (``saved_tensors_hooks``, exact),
   peak memory and seconds, each in a fresh process.

Run: python bench/ffjord.py [--quick] [--only TABLE] (2 threads; ``BENCH_THREADS=1`` beside another
job, since 3 threads on 2 cores slow each other many times over); writes
bench/results/ffjord_{training,trace,images,adjoint}.{json,md}.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from _cells import report
from _harness import parser, run_child, setup

FLOWS = (
    ("ffjord_toy.8gaussians", "maximum likelihood (FFJORD)"),
    ("ffjord_toy.rnode_8gaussians", "maximum likelihood + RNODE terms"),
    ("ffjord_toy.cfm_8gaussians", "OT conditional flow matching"),
)


def entropy_8gaussians(n: int = 1_000_000, seed: int = 123) -> tuple[float, float]:
    """Monte Carlo differential entropy (nats) of FFJORD's 8gaussians and its standard error:
    the mixture's exact log-density at its own samples."""
    from zoo.data.toy2d import sample_toy

    x = sample_toy("8gaussians", n, seed).double()
    s = 1 / math.sqrt(2)
    centers = (
        4.0
        * torch.tensor(
            [(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)],
            dtype=torch.float64,
        )
        / 1.414
    )
    sd = 0.5 / 1.414
    d2 = (x[:, None, :] - centers[None]).pow(2).sum(-1)
    logp = torch.logsumexp(-d2 / (2 * sd**2), 1) - math.log(8) - math.log(2 * math.pi * sd**2)
    return float(-logp.mean()), float(logp.std() / math.sqrt(n))


def _training_rows(quick: bool, candidates: dict[str, str] | None = None) -> list[dict]:
    import zoo
    from zoo.data.toy2d import sample_toy
    from zoo.nn import flow_matching_loss

    candidates = candidates or {}
    have = set(zoo.list_models(pretrained=True))
    x = sample_toy("8gaussians", 512, 0)
    test = sample_toy("8gaussians", 2000 if quick else 10_000, 1)
    # the RNODE Frobenius term's random probe is part of the solved state, so the adaptive
    # solver's NFE varies from one iteration to the next (seen: 62 to 68 at the same weights):
    # the mean over 10 iterations, from one seeded stream per flow
    reps = 1 if quick else 10
    h, se = entropy_8gaussians(100_000 if quick else 1_000_000)
    rows = []
    flows = list(FLOWS) + [
        (f"{name} candidate", objective) for name, objective in FLOWS if name in candidates
    ]
    for name, objective in flows:
        source = (
            candidates.get(name.removesuffix(" candidate")) if name.endswith(" candidate") else name
        )
        if source not in have and not name.endswith(" candidate"):
            rows.append({"model": name, "objective": objective, "note": "not shipped"})
            continue
        m = zoo.load(source).train()
        torch.manual_seed(0)
        calls = [0]
        m.field.register_forward_hook(lambda *_, c=calls: c.__setitem__(0, c[0] + 1))
        nfe_f = 0
        t0 = time.perf_counter()
        for _ in range(reps):
            m.zero_grad(set_to_none=True)
            calls[0] = 0
            if "cfm" in name:
                flow_matching_loss(
                    m.field, x, m.cnf.T, generator=torch.Generator().manual_seed(0)
                ).backward()
                nfe_f += calls[0]  # one field call, no solve
            else:
                loss = -m.log_prob(x).mean()
                for v in m.reg.values():
                    loss = loss + 0.01 * v.mean()
                loss.backward()
                nfe_f += m.cost().nfe_forward  # backprop runs back through these same calls
        sec = (time.perf_counter() - t0) / reps
        m.eval()
        with torch.no_grad():
            nll = float(-m.log_prob(test).double().mean())
            test_nfe = m.cost().nfe_forward
        rows.append({
            "model": name, "objective": objective, "nfe_fwd": round(nfe_f / reps, 1),
            "s_per_iter": round(sec, 3),
            "test_nll": round(nll, 4), "gap_to_entropy": round(nll - h, 4), "test_nfe": test_nfe,
        })  # fmt: skip
    base = next((r for r in rows if r["model"] == FLOWS[0][0] and "nfe_fwd" in r), None)
    for r in rows:
        if base and "nfe_fwd" in r:
            r["nfe_vs_ffjord"] = round(r["nfe_fwd"] / base["nfe_fwd"], 3)
    print(f"true entropy of 8gaussians (Monte Carlo): {h:.4f} +- {se:.4f} nats")
    for r in rows:
        r["entropy"] = round(h, 4)
    return rows


IMAGE_FLOWS = (
    ("ffjord_image_tiny.fashion_mnist", "single-scale", "maximum likelihood (FFJORD)"),
    ("ffjord_image_tiny.cfm_fashion_mnist", "single-scale", "OT conditional flow matching"),
    ("ffjord_multires_tiny.fashion_mnist", "multi-resolution", "maximum likelihood (FFJORD)"),
    ("ffjord_multires_tiny.cfm_fashion_mnist", "multi-resolution", "OT conditional flow matching"),
)


def _image_rows(quick: bool) -> list[dict]:
    import json

    import numpy as np

    import zoo
    from zoo.cards import shipped_row
    from zoo.nn import flow_matching_loss

    root = Path(__file__).resolve().parents[1]
    have = set(zoo.list_models(pretrained=True))
    v = torch.from_numpy(np.load(root / "zoo/_samples/fashion_mnist_pixels.npz")["x"][:64])
    reps = 1 if quick else 3
    rows = []
    for name, field, objective in IMAGE_FLOWS:
        row = {"model": name, "field": field, "objective": objective}
        if name not in have:
            rows.append(row | {"note": "not shipped"})
            continue
        m = zoo.load(name).train()
        torch.manual_seed(0)
        calls = [0]
        m.field.register_forward_hook(lambda *_, c=calls: c.__setitem__(0, c[0] + 1))
        cfm, nfe = "flow matching" in objective, 0
        t0 = time.perf_counter()
        for _ in range(reps):
            m.zero_grad(set_to_none=True)
            calls[0] = 0
            if cfm:
                y = m.to_flow_space(v, torch.Generator().manual_seed(0))
                flow_matching_loss(m.field, y, m.cnf.T, generator=torch.Generator()).backward()
                nfe += calls[0]
            else:
                (-m.log_prob(v, torch.Generator().manual_seed(0)).mean()).backward()
                nfe += m.cost().nfe_forward
        row |= {"params": sum(p.numel() for p in m.parameters()), "nfe_fwd": round(nfe / reps, 1),
                "s_per_iter": round((time.perf_counter() - t0) / reps, 3)}  # fmt: skip
        log = root / "checkpoints" / name / "training_log.json"
        if log.is_file():
            row["steps_in_budget"] = int(json.loads(log.read_text())["train/loss"][-1][0]) + 1
        card = shipped_row(name)
        if card is not None:
            row |= {"test_bpd (zoo card)": card["metrics"]["bpd"], "test_nfe": card["nfe_mean"]}
        rows.append(row)
        print(row, flush=True)
    return rows


def _trace_rows(quick: bool) -> list[dict]:
    from zoo.models.ffjord import ConcatSquashMLP
    from zoo.nn._cnf import _CNFDynamics

    dims = (2, 16, 64) if quick else (2, 16, 64, 256, 784)
    batch, reps = (16, 1) if quick else (64, 3)
    rows = []
    for dim in dims:
        torch.manual_seed(0)
        field = ConcatSquashMLP(dim, (64, 64))
        z = torch.randn(batch, dim)
        t = torch.tensor(0.25)
        out = {"dim": dim}
        for trace in ("exact", "hutchinson"):
            dyn = _CNFDynamics(field, trace, False, False)
            dyn.noise = torch.randn(batch, dim)
            dyn(t, (z, z.new_zeros(batch)))  # warm-up
            t0 = time.perf_counter()
            for _ in range(reps):
                zz = z.clone().requires_grad_(True)
                dz, dlogp = dyn(t, (zz, zz.new_zeros(batch)))
                (dz.sum() + dlogp.sum()).backward()  # the graph a training step builds
            out[f"{trace}_ms"] = round((time.perf_counter() - t0) / reps * 1e3, 2)
        out["exact_vs_hutchinson"] = round(out["exact_ms"] / out["hutchinson_ms"], 1)
        rows.append(out)
        print(out, flush=True)
    return rows


def child(adjoint: bool, batch: int) -> dict:
    """One configuration, run in a fresh interpreter by ``run_child``."""
    import torch

    import zoo
    from zoo.data.toy2d import sample_toy

    torch.set_num_threads(2)
    torch.manual_seed(0)
    m = zoo.create_model("ffjord_toy", adjoint=adjoint).train()
    if "ffjord_toy.8gaussians" in zoo.list_models(pretrained=True):
        m.load_state_dict(zoo.load("ffjord_toy.8gaussians").state_dict())
    x = sample_toy("8gaussians", batch, 0)
    from _memprobe import measure, saved_mib

    def step():
        (-m.log_prob(x).mean()).backward()

    step()
    m.zero_grad(set_to_none=True)
    saved = saved_mib(m, lambda: -m.log_prob(x).mean())
    p, sec = measure(step)
    c = m.cost()
    return {
        "gradient": "adjoint" if adjoint else "direct backprop",
        "batch": batch,
        "nfe_forward": c.nfe_forward,
        "nfe_backward": c.nfe_backward,
        "saved_mib": round(saved, 2),
        "peak_mib": round(p, 1),
        "step_s": round(sec, 3),
    }


def main(argv=None) -> dict[str, list[dict]]:
    p = parser(__doc__, "ffjord")
    p.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="also time an exported, not yet shipped version of a flow (a `zoo export "
        "--out-dir` folder), in a row of its own: how a recipe's rule is applied before it ships",
    )
    p.add_argument(
        "--only", choices=["training", "trace", "images", "adjoint"], help="one table only"
    )
    a = setup(p.parse_args(argv))
    candidates = {}
    for c in a.candidate:
        name, sep, folder = c.partition("=")
        if not sep or name not in dict(FLOWS) or not Path(folder).is_dir():
            p.error(
                f"--candidate {c!r}: expected NAME=FOLDER, NAME one of {', '.join(dict(FLOWS))}, FOLDER an exported checkpoint folder"
            )
        candidates[name] = folder
    out = {}
    if a.only not in (None, "training"):
        return {**out, **_other_tables(a, out)}
    print("-- one training iteration at the final weights (8gaussians, batch 512) --")
    out["training"] = rows = _training_rows(a.quick, candidates)
    cols = ["model", "objective", "nfe_fwd", "nfe_vs_ffjord", "s_per_iter"]
    report(
        rows, cols + ["test_nll", "entropy", "gap_to_entropy", "test_nfe"], f"{a.out}_training.json"
    )
    if a.only == "training":
        return out
    return _other_tables(a, out)


def _other_tables(a, out: dict) -> dict:
    if a.only == "adjoint":
        return _adjoint_table(a, out)
    if a.only in (None, "trace"):
        print("\n-- exact trace vs Hutchinson, one dynamics evaluation with its backward --")
        out["trace"] = rows = _trace_rows(a.quick)
        cols = ["dim", "exact_ms", "hutchinson_ms", "exact_vs_hutchinson"]
        report(rows, cols, f"{a.out}_trace.json")
    if a.only == "trace":
        return out
    print(
        "\n-- Fashion-MNIST flows: one training iteration (batch 64), and what the budget bought --"
    )
    out["images"] = rows = _image_rows(a.quick)
    cols = ["model", "field", "objective", "params", "nfe_fwd", "s_per_iter", "steps_in_budget"]
    report(rows, cols + ["test_bpd (zoo card)", "test_nfe", "note"], f"{a.out}_images.json")
    if a.only == "images":
        return out
    return _adjoint_table(a, out)


def _adjoint_table(a, out: dict) -> dict:
    print("\n-- adjoint vs direct backprop, one training step (ffjord_toy, dopri5 1e-5) --")
    batch = 64 if a.quick else 512
    rows = [run_child(child, adjoint, batch) for adjoint in (False, True)]
    for r in rows:
        r["saved_vs_direct"] = round(r["saved_mib"] / max(rows[0]["saved_mib"], 1e-9), 3)
    out["adjoint"] = rows
    cols = ["gradient", "batch", "nfe_forward", "nfe_backward", "saved_mib", "saved_vs_direct"]
    report(rows, cols + ["peak_mib", "step_s"], f"{a.out}_adjoint.json")
    return out


if __name__ == "__main__":
    main()
