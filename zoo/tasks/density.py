"""Density estimation: maximum likelihood for continuous normalizing flows (FFJORD), with the
RNODE regularizers (Finlay et al. 2020) weighted here; and its task spec (NLL in nats and
bits/dim, a density and samples figure)."""

from __future__ import annotations

import json
import math
from typing import Any

import torch
from torch import Tensor

from ..models import create_model
from ._base import ZooTask
from ._spec import EvalResult, FiniteGuard, MetricSpec, TaskSpec, load_sample, register_task

__all__ = ["DensityEstimation", "DensityEstimationSpec"]


class DensityEstimation(ZooTask):
    """Train a flow by maximum likelihood: loss = mean NLL (+ RNODE terms).

    Args:
        arch: Entry point (``ffjord_toy``).
        model_args: Constructor overrides.
        lr: Peak learning rate (cosine schedule, timm).
        weight_decay: Weight decay.
        optimizer: timm optimizer name.
        warmup_steps: Linear warm-up steps.
        min_lr: Final learning rate.
        objective: ``"maximum_likelihood"`` (FFJORD/RNODE: the NLL through the ODE solve) or
            ``"flow_matching"`` (OT-CFM: regress the field onto straight-path velocities, no
            solve in training; validation still reports the exact NLL).
        ot_coupling: Flow matching only: pair data and base samples by minibatch OT.
        kinetic_weight: RNODE kinetic-energy weight (needs ``kinetic_energy: true``).
        jacobian_weight: RNODE Jacobian-Frobenius weight (needs ``jacobian_frobenius: true``).
        bf16: bfloat16 autocast of the vector field.
        init_from: Start from these weights (a zoo name, a folder or a ``.ckpt``).
        skip_unconverged: Unused by ODE models (kept for the shared task surface).
    """

    def __init__(
        self,
        arch: str = "ffjord_toy",
        model_args: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        optimizer: str = "adam",
        warmup_steps: int = 0,
        min_lr: float = 1e-5,
        objective: str = "maximum_likelihood",
        ot_coupling: bool = True,
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        bf16: bool = False,
        init_from: str | None = None,
        skip_unconverged: bool = False,
    ) -> None:
        super().__init__()
        if objective not in ("maximum_likelihood", "flow_matching"):
            raise ValueError(
                f"objective must be 'maximum_likelihood' or 'flow_matching', got {objective!r}"
            )
        self.save_hyperparameters()
        self.model = create_model(arch, **(model_args or {}))
        if objective == "flow_matching":
            from ..nn import CNF

            n_cnf = sum(isinstance(m, CNF) for m in self.model.modules())
            if n_cnf != 1:
                raise ValueError(
                    f"flow matching trains one vector field over the data space; {arch} stacks "
                    f"{n_cnf} CNFs (num_blocks > 1 or a multiscale flow): use one block "
                    "(num_blocks: 1, n_scales: 0) or objective: maximum_likelihood"
                )
        dyn = getattr(getattr(self.model, "cnf", None), "dynamics", None)
        for weight, switch, on in (
            (kinetic_weight, "kinetic_energy", getattr(dyn, "kinetic", False)),
            (jacobian_weight, "jacobian_frobenius", getattr(dyn, "jacobian", False)),
        ):
            if weight and not on:  # a weight with its term off would be silently ignored
                raise ValueError(
                    f"{switch.split('_')[0]}_weight={weight} needs the model's {switch} term: "
                    f"set model_args: {{{switch}: true}}"
                )

    def _warmup_steps(self) -> int:
        return self.hparams.warmup_steps

    def _common_step(self, batch, stage: str) -> Tensor:
        x = batch[0]  # (points,) or, from an image data module, (pixels, labels)
        hp = self.hparams
        if stage == "train" and hp.objective == "flow_matching":
            from ..nn import flow_matching_loss

            x = self.model.to_flow_space(x)  # images: dequantized, logit-transformed
            with self._autocast():
                loss = flow_matching_loss(self.model.field, x, self.model.cnf.T, hp.ot_coupling)
            self.log("train/cfm_loss", loss.detach(), prog_bar=True, batch_size=x.shape[0])
            self.log("train/loss", loss.detach(), batch_size=x.shape[0])
            return loss
        with self._autocast():
            logp = self.model.log_prob(x)
        nll = -logp.float().mean()
        loss = nll
        reg = self.model.reg
        if stage == "train":
            if hp.kinetic_weight and "kinetic_energy" in reg:
                loss = loss + hp.kinetic_weight * reg["kinetic_energy"].mean()
            if hp.jacobian_weight and "jacobian_frobenius" in reg:
                loss = loss + hp.jacobian_weight * reg["jacobian_frobenius"].mean()
        bs = x.shape[0]
        self.log(f"{stage}/nll", nll.detach(), prog_bar=True, batch_size=bs)
        self.log(f"{stage}/loss", loss.detach(), batch_size=bs)
        self.log(f"{stage}/nfe", float(self.model.cost().nfe_forward), batch_size=bs)
        return loss


class DensityEstimationSpec(TaskSpec):
    """Test NLL (nats per sample) and bits per dimension; figure: density and samples."""

    name = "density-estimation"
    title = "Density Estimation"
    pipeline_tag = "other"
    tags = ("normalizing-flows", "continuous-normalizing-flows", "neural-ode")
    unit = "point"
    metrics = (
        MetricSpec("nll", "test NLL (nats)", False, "nll"),
        MetricSpec("bpd", "bits/dim", False, "bits-per-dim"),
    )
    primary = "nll"
    splits = ("test", "train")
    lightning_module = "zoo.tasks.density:DensityEstimation"
    default_sample_size = 5000

    def options(self, cfg: dict) -> dict:
        return {k: cfg[k] for k in ("sample_size",) if k in cfg}

    def eval_batches(self, model, protocol, split, sample, limit, data_dir, batch_size):
        if sample:
            x = torch.from_numpy(load_sample(protocol)["x"])
        else:
            x = protocol.datamodule_obj(data_dir).eval_split(split)
            if isinstance(x, tuple):  # an image data module: (uint8 images, labels)
                x = x[0]
        if limit:
            x = x[:limit]
        step = max(batch_size, 1000) if x.dim() == 2 else batch_size
        return [x[i : i + step] for i in range(0, len(x), step)]

    def evaluate(self, model, batches, protocol, device, clock) -> EvalResult:
        guard = FiniteGuard("log-densities")
        from tqdm import tqdm

        total, n, nfe = 0.0, 0, []
        gen = torch.Generator().manual_seed(0)  # image flows dequantize uint8 pixels with it
        for x in tqdm(batches, desc="eval", unit="batch"):
            x = x.to(device)
            with clock, torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2**31, (1,), generator=gen)))
                logp = model.log_prob(x)
            guard(logp)
            total += float(-logp.double().sum())
            n += x.shape[0]
            nfe.append(model.cost().nfe_forward)
        nll = total / max(n, 1)
        dim = getattr(model, "dim", 1)
        guard.check(getattr(model, "pretrained_cfg", {}).get("name", type(model).__name__))
        return EvalResult(
            metrics={"nll": round(nll, 4), "bpd": round(nll / (dim * math.log(2)), 4)},
            num_samples=n,
            nfe_mean=round(sum(nfe) / len(nfe), 1) if nfe else None,
            seconds=clock.seconds,
        )

    def smoke_inputs(self, model):
        shape = tuple(getattr(model, "input_shape", (model.dim,)))
        if len(shape) == 1:
            return (torch.randn(4, *shape),), (4,)
        return (torch.randint(0, 256, (4, *shape), dtype=torch.uint8),), (4,)  # pixels

    def protocol_note(self, protocol) -> str:
        return "mean negative log-likelihood in nats per point; bits/dim = NLL / (dim ln 2)"

    def build_sample(self, protocol, data_dir, out) -> str:
        import numpy as np

        x = protocol.datamodule_obj(data_dir).eval_split("test")
        n = int(protocol.options.get("sample_size", self.default_sample_size))
        x = (x[0] if isinstance(x, tuple) else x)[:n]
        np.savez_compressed(out, x=x.numpy())
        return f"{len(x)} {'points' if x.dim() == 2 else 'images'}"

    def card_facts(self, name: str, model, info: dict) -> dict:
        facts = super().card_facts(name, model, info)
        if getattr(model, "input_shape", None) is not None:
            facts["input_shape"] = list(model.input_shape)
        return facts

    def card_use(self, name: str, facts: dict, info: dict) -> list[str]:
        if len(facts.get("input_shape") or ()) == 3:  # an image flow: pixels in, pixels out
            shape = ", ".join(str(s) for s in facts["input_shape"])
            return [
                "import math",
                "",
                f"x = zoo.example_batch(model, 2)  # uint8 pixels (2, {shape}) of the shipped sample",
                "logp = model.log_prob(x)  # nats per image",
                "print(-logp / (x[0].numel() * math.log(2)))  # bits/dim, 256-level scale",
            ]
        return [
            "import torch",
            "",
            "x = zoo.example_batch(model, 500)  # 500 test points of the shipped sample",
            "logp = model.log_prob(x)  # nats per point",
            'print(f"test NLL {-logp.mean():.3f} nats")',
            "x_new = model.sample(100, generator=torch.Generator().manual_seed(0))",
            f'fast = zoo.load("{name}", rtol=1e-3, atol=1e-3)  # a looser solve: fewer NFE',
        ]

    def card_extra(self, name: str, facts: dict, info: dict) -> list[str]:
        if not info.get("floor"):
            return []
        return [
            "## The floor",
            f"The test NLL above is to be read against {info['floor']}. A loose solve's "
            "NLL is not a density's: its solver error can put it below the floor (see the "
            "tolerance rows), which is no better model.",
            "",
        ]

    def figures(self, name, model, rows, info, out_dir, data_dir=None):
        out = []
        if len(getattr(model, "input_shape", ())) == 3:
            png = out_dir / f"{name}.samples.png"
            nfe = _plot_samples(name, model, png)
            out.append((f"36 samples by the reverse ODE at the shipped tolerance ({nfe} NFE)", png))
        elif getattr(model, "dim", None) == 2:
            png = out_dir / f"{name}.density.png"
            _plot_density(name, model, self.protocol(info), png, data_dir)
            out.append(("density and samples", png))
        from ..models import checkpoint_dir

        log = checkpoint_dir() / name / "training_log.json"
        if log.is_file():  # written by zoo export from the run's CSV log
            png = out_dir / f"{name}.training.png"
            _plot_training(name, json.loads(log.read_text()), png)
            out.append(("NFE and validation NLL during training", png))
        return out


def _plot_density(name, model, protocol, out, data_dir=None, n: int = 2000) -> None:
    from matplotlib.figure import Figure

    data = protocol.datamodule_obj(data_dir).eval_split("test")[:n]
    lim = float(data.abs().max()) * 1.1
    g = torch.linspace(-lim, lim, 120)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    with torch.no_grad():
        logp = model.log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1))
        samples = model.sample(n, generator=torch.Generator().manual_seed(0))
    fig = Figure(figsize=(9, 3), dpi=110)
    axes = fig.subplots(1, 3)
    axes[0].scatter(data[:, 0], data[:, 1], s=1, alpha=0.5)
    axes[0].set_title("test data", fontsize=8)
    axes[1].imshow(logp.exp().reshape(120, 120), origin="lower", extent=(-lim, lim, -lim, lim))
    axes[1].set_title("model density", fontsize=8)
    axes[2].scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.5, color="C1")
    axes[2].set_title("model samples (reverse ODE)", fontsize=8)
    for ax in axes:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
    fig.suptitle(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(out)


def _plot_training(name: str, curve: dict, out) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3), dpi=110)
    axes = fig.subplots(1, 2)
    for ax, keys, label in (
        (axes[0], ("train/nfe", "val/nfe"), "NFE per solve"),
        (axes[1], ("val/nll",), "validation NLL (nats)"),
    ):
        for k in keys:
            if k in curve:
                pts = curve[k]
                few = len(pts) < 20  # a run validated a few times: show its points
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, lw=1,
                        marker="o" if few else None, ms=4)  # fmt: skip
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{name}: training (from its run's log)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)


def _plot_samples(name, model, out, n: int = 36) -> None:
    from matplotlib.figure import Figure

    with torch.no_grad():
        x = model.sample(n, generator=torch.Generator().manual_seed(0)).floor().clamp(0, 255)
    nfe = model.cost().nfe_forward
    side = int(math.sqrt(n))
    c, h, w = x.shape[1:]
    grid = x[: side * side].reshape(side, side, c, h, w).permute(0, 3, 1, 4, 2)
    grid = grid.reshape(side * h, side * w, c).squeeze(-1) / 255
    fig = Figure(figsize=(4, 4), dpi=110)
    ax = fig.subplots()
    ax.imshow(grid.numpy(), cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(f"{name}: samples (seed 0, {nfe} NFE)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    return nfe


register_task(DensityEstimationSpec())
