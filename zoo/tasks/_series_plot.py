"""The time-series card figure: observed points, the predicted mean and its posterior band."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["plot_trajectories"]


def plot_trajectories(name: str, model, protocol, out: Path, data_dir=None, n_series: int = 3):
    """Plot the densest ``n_series`` of the first test batch; 5-95% band over 20 samples."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    from .time_series import eval_generator, split_masks

    dm = protocol.datamodule_obj(data_dir)
    b = next(iter(dm.eval_split("test")))
    opts = protocol.options
    cond, target = split_masks(
        b.times,
        b.mask,
        opts["mode"],
        opts["cond_frac"],
        generator=eval_generator(b.values, b.times),
    )
    idx = torch.argsort(b.mask.sum((1, 2)), descending=True)[:n_series]  # the densest series
    q = torch.linspace(0, float(b.times.max()), 200)
    with torch.random.fork_rng():  # the caller's global RNG state is left as it was
        torch.manual_seed(0)
        mean, samples = model.predict(b.times, b.values[idx], cond[idx], q, n_samples=20)
    names = getattr(dm, "variable_names", None)
    ncols = min(2, b.values.shape[-1])
    fig = Figure(figsize=(4 * ncols, 2.2 * n_series), dpi=110)
    axes = fig.subplots(n_series, ncols, squeeze=False)
    for row, s in enumerate(idx.tolist()):
        dims = torch.argsort(b.mask[s].sum(0), descending=True)[:ncols].tolist()
        for col, d in enumerate(dims):
            ax = axes[row][col]
            band = samples[:, row, :, d]
            lo, hi = band.quantile(0.05, 0), band.quantile(0.95, 0)
            ax.fill_between(q, lo, hi, color="C0", alpha=0.25, lw=0, label="5-95% (posterior)")
            ax.plot(q, mean[row, :, d], color="C0", lw=1.2, label="predicted mean")
            c, t = cond[s, :, d] > 0, (target[s, :, d] > 0) & ~(cond[s, :, d] > 0)
            ax.plot(b.times[c], b.values[s, c, d], "k.", ms=4, label="observed (conditioned on)")
            if t.any():
                ax.plot(b.times[t], b.values[s, t, d], "rx", ms=4, label="held out (scored)")
            hidden = (b.mask[s, :, d] > 0) & ~c & ~(target[s, :, d] > 0)  # thinned by cond_frac
            if hidden.any():
                ax.plot(
                    b.times[hidden], b.values[s, hidden, d], ".", color="0.6", ms=3,
                    label="hidden (not seen, not scored)",
                )  # fmt: skip
            label = names[d] if names else f"variable {d}"
            ax.set_title(f"test series {s}: {label}", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6, loc="best")
    for ax in axes[-1]:
        ax.set_xlabel("time (scaled to [0, 1] per batch)", fontsize=7)
    fig.suptitle(f"{name}: {opts['mode']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
