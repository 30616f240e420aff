"""Language-modelling task for the DEQ-Transformer family."""

from __future__ import annotations

import time
from typing import Any

import torch.nn.functional as F
from torchmetrics.text import Perplexity

from ..models import create_model
from ._base import ZooTask
from ._spec import EvalResult, FiniteGuard, MetricSpec, TaskSpec, load_sample, register_task

__all__ = ["LanguageModeling", "LanguageModelingSpec"]


def correction_loss(logits: list, y, gamma: float):
    """``sum_i gamma ** (n - i) * CE(logits_i, y)`` over the n intermediate states (earliest
    first, i = 0..n-1), or ``None`` when there are none."""
    if not logits:
        return None
    n = len(logits)
    return sum(
        gamma ** (n - i) * F.cross_entropy(lg.float().reshape(-1, lg.shape[-1]), y.reshape(-1))
        for i, lg in enumerate(logits)
    )


class LanguageModeling(ZooTask):
    """Next-token prediction with perplexity (torchmetrics), tokens/s and solver statistics.

    The vocabulary size is taken from the data module at setup when ``model_args`` does not
    set it. Segment memory is carried across consecutive batches (they continue each other's
    rows, see :class:`~zoo.data._text.StreamSegments`) when the model has ``mem_len > 0``.

    Args:
        arch: Entry point (``deq_transformer_tiny``, ``transformer_tiny``, ...).
        model_args: Constructor overrides.
        lr: Peak learning rate (cosine schedule with linear warmup, timm).
        weight_decay: Weight decay.
        optimizer: timm optimizer name.
        warmup_steps: Linear warmup steps.
        min_lr: Final learning rate.
        jac_reg_weight: Weight of the Jacobian regularizer (needs ``jac_reg_samples >= 1``).
        jac_reg_freq: The fraction of training steps that compute and add the term, drawn per
            step (locuslab/deq's ``jac_loss_freq``; the JR paper's WikiText-103 recipe: 0.35); a
            step without it skips its cost.
        jac_reg_increment: Add 0.1 to the weight every this many steps after pretraining
            (locuslab/deq's ``jac_incremental``; 0 = a constant weight).
        eval_max_iter: Solver budget in validation/test.
        bf16: bfloat16 autocast for the forward.
        init_from: Start from these weights: a zoo name (``transformer_tiny.sotu``), a local
            folder or a Lightning ``.ckpt``. Matching tensors are copied; a resumed run
            (``--ckpt_path``) still restores its own state.
        skip_unconverged: Skip the optimizer step of a batch whose forward solve did not
            converge (a non-finite loss is always skipped); ``train/skipped`` logs it.
        pretrain_steps: The first steps train the DEQ's block as a shallow unrolled stack
            (``model_args.pretrain_depth`` applications, plain backprop, no Jacobian term)
            before switching to the equilibrium solve (locuslab/deq's ``pretrain_steps``);
            refused for a model without an equilibrium.
        correction_gamma: The fixed-point correction loss (torchdeq; needs
            ``model_args.correction_states``): the cross-entropy of the i-th of n intermediate
            states (earliest first) is added with weight ``gamma ** (n - i)``, the final
            state's loss keeping weight 1.

    Example:
        >>> from zoo.tasks import LanguageModeling
        >>> task = LanguageModeling(arch="transformer_tiny", model_args={"vocab_size": 50, "d_model": 16,
        ...                         "n_heads": 2, "d_ff": 32, "tgt_len": 8, "mem_len": 8})
        >>> task.model is None  # built at setup, once the data module's vocabulary is known
        True
    """

    def __init__(
        self,
        arch: str = "deq_transformer_tiny",
        model_args: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adamw",
        warmup_steps: int = 200,
        min_lr: float = 1e-5,
        jac_reg_weight: float = 0.0,
        jac_reg_freq: float = 1.0,
        jac_reg_increment: int = 0,
        eval_max_iter: int | None = None,
        bf16: bool = False,
        init_from: str | None = None,
        skip_unconverged: bool = False,
        pretrain_steps: int = 0,
        correction_gamma: float = 0.8,
    ) -> None:
        super().__init__()
        if not 0.0 < correction_gamma <= 1.0:
            raise ValueError(f"correction_gamma must be in (0, 1], got {correction_gamma!r}")
        if not 0.0 < jac_reg_freq <= 1.0:
            raise ValueError(f"jac_reg_freq must be in (0, 1], got {jac_reg_freq!r}")
        if isinstance(jac_reg_increment, bool) or not isinstance(jac_reg_increment, int):
            raise ValueError(
                f"jac_reg_increment must be an integer >= 0, got {jac_reg_increment!r}"
            )
        if jac_reg_increment < 0:
            raise ValueError(f"jac_reg_increment must be an integer >= 0, got {jac_reg_increment}")
        if isinstance(pretrain_steps, bool) or not isinstance(pretrain_steps, int):
            raise ValueError(f"pretrain_steps must be an integer >= 0, got {pretrain_steps!r}")
        if pretrain_steps < 0:
            raise ValueError(f"pretrain_steps must be an integer >= 0, got {pretrain_steps}")
        self.save_hyperparameters()
        self.model = None
        self._mems: dict[str, Any] = {}
        self._t0 = None

    def configure_model(self) -> None:
        if self.model is not None:
            return
        args = dict(self.hparams.model_args or {})
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if "vocab_size" not in args and dm is not None:
            dm.setup("fit")
            args["vocab_size"] = len(dm.vocab)
        self.hparams["model_args"] = args  # the resolved vocabulary size goes into the checkpoint
        self.model = create_model(self.hparams.arch, **args)
        if self.hparams.get("pretrain_steps", 0) and not hasattr(self.model, "pretraining"):
            raise ValueError(
                f"pretrain_steps={self.hparams.pretrain_steps} needs an equilibrium model; "
                f"{self.hparams.arch} has none (set pretrain_steps: 0)"
            )
        if self.hparams.eval_max_iter and hasattr(self.model, "set_inference_budget"):
            self.model.set_inference_budget(max_iter=self.hparams.eval_max_iter)
        self.val_ppl, self.test_ppl = Perplexity(), Perplexity()
        self._apply_init_from()

    def forward(self, ids):
        return self.model(ids)

    def _common_step(self, batch, stage: str):
        x, y = batch
        if hasattr(self.model, "pretraining"):
            self.model.pretraining = self._pretraining()
        jac_w = self._arm_jac_reg() if stage == "train" else 0.0
        mems = self._mems.get(stage) if self.model.mem_len else None
        if mems is not None:
            mems = [m.to(x.device) for m in mems]
        with self._autocast():
            out = self.model(x, mems=mems, return_mems=True)
        logits, new_mems = out
        if self.model.mem_len:
            self._mems[stage] = new_mems
        logits = logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        n_tok = y.numel()
        if stage == "train":
            corr = correction_loss(
                getattr(self.model, "correction_logits", []),
                y,
                self.hparams.get("correction_gamma", 0.8),
            )
            if corr is not None:
                loss = loss + corr
                self.log("train/correction_loss", corr.detach())
            loss = self._add_jac_reg(loss, n_tok, jac_w)
            if self.hparams.get("pretrain_steps", 0):
                self.log("train/pretraining", float(self._pretraining()))
            self.log("train/loss", loss.detach(), prog_bar=True)
            self.log("train/ppl", loss.detach().exp())
            now = time.perf_counter()
            if self._t0 is not None:
                self.log("train/tokens_per_s", n_tok / (now - self._t0), prog_bar=True)
            self._t0 = now
        else:
            metric = self.val_ppl if stage == "val" else self.test_ppl
            metric(logits, y)
            self.log(f"{stage}/ppl", metric, prog_bar=True, batch_size=n_tok)
            self.log(f"{stage}/loss", loss.detach(), batch_size=n_tok)
        return loss

    def _new_stream(self) -> None:  # a stream starts again: no warm start from another one
        reset = getattr(self.model, "reset_warm_start", None)
        if reset is not None:
            reset()

    def on_validation_epoch_start(self) -> None:
        self._mems.pop("val", None)
        self._new_stream()

    def on_validation_epoch_end(self) -> None:
        self._new_stream()  # training goes on from its own stream, not the validation's

    def on_test_epoch_start(self) -> None:
        self._mems.pop("test", None)
        self._new_stream()

    def on_train_epoch_start(self) -> None:
        if not self.__dict__.pop("_resumed_with_mems", False):  # a run resumed mid-epoch keeps it
            self._mems.pop("train", None)
        self._new_stream()
        self._t0 = None

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self.__dict__.pop("_resumed_with_mems", None)  # consumed by the first step after a resume

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if checkpoint.get("zoo_train_mems") is not None:
            self._mems["train"] = list(checkpoint["zoo_train_mems"])
            self._resumed_with_mems = True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        mems = self._mems.get("train")
        if mems is not None:  # the segment memory, so a resumed run continues the stream
            checkpoint["zoo_train_mems"] = [m.detach().cpu() for m in mems]
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "vocab", None) is not None:
            checkpoint["tokenizer"] = {
                "level": dm.level,
                "vocab": dm.vocab.itos,
                "dataset": dm.name,
            }

    def _warmup_steps(self) -> int:
        return self.hparams.warmup_steps


class LanguageModelingSpec(TaskSpec):
    """Perplexity over a token stream, segment memory carried across segments.

    Example:
        >>> from zoo.tasks import get_task
        >>> get_task("language-modeling").unit
        'token'
    """

    name = "language-modeling"
    title = "Language Modeling"
    pipeline_tag = "text-generation"
    tags = ("transformer",)
    unit = "token"
    metrics = (
        MetricSpec("ppl", "perplexity", False, "perplexity"),
        MetricSpec("bpc", "bits per character", False, "bpc"),
    )
    primary = "ppl"  # bits per character for character-level data (see ``protocol``)
    splits = ("test", "val", "train")
    lightning_module = "zoo.tasks.language_model:LanguageModeling"
    default_sample_size = 20000  # tokens

    def protocol(self, cfg: dict):
        """Word-level data reports perplexity; character-level data (a data module whose
        ``level`` is ``"char"``) reports bits per character first, then perplexity."""
        import dataclasses

        from ..data._registry import datamodule_class

        p = super().protocol(cfg)
        if getattr(datamodule_class(p.datamodule), "level", "word") == "char":
            p = dataclasses.replace(p, primary="bpc")
        return p

    def eval_batches(self, model, protocol, split, sample, limit, data_dir, batch_size):
        import torch

        from ..data._text import StreamSegments, Vocab

        if sample:
            tokens = [str(t) for t in load_sample(protocol)["tokens"]]
        else:
            tokens = protocol.datamodule_obj(data_dir).eval_split(split)
        if limit:
            tokens = tokens[:limit]
        stream = torch.tensor(Vocab(model.tokenizer["vocab"]).encode(tokens), dtype=torch.long)
        if stream.numel() < 2:
            raise ValueError(f"{len(tokens)} tokens: perplexity needs at least 2")
        bs = min(10, max(1, (stream.numel() - 1) // (2 * model.tgt_len)))
        return StreamSegments(stream, bs, model.tgt_len)

    def evaluate(self, model, batches, protocol, device, clock) -> EvalResult:
        guard = FiniteGuard("output logits")
        from tqdm import tqdm

        ppl = Perplexity().to(device)
        nfe, mems = [], None
        for x, y in tqdm(batches, desc="eval", unit="segment"):
            x, y = x.to(device), y.to(device)
            with clock:
                logits, mems = model(x, mems=mems, return_mems=True)
            guard(logits)
            ppl.update(logits.float(), y)
            nfe.append(model.cost().nfe_forward)
        import math

        n = int(batches.x.numel())
        value = float(ppl.compute())
        metrics = {"ppl": round(value, 2)}
        if protocol.primary == "bpc":  # log2 of the per-character perplexity
            metrics = {"bpc": round(math.log2(value), 4), "ppl": round(value, 3)}
        guard.check(getattr(model, "pretrained_cfg", {}).get("name", type(model).__name__))
        return EvalResult(
            metrics=metrics,
            num_samples=n,
            nfe_mean=round(sum(nfe) / len(nfe), 2) if any(nfe) else None,
            seconds=clock.seconds,
        )

    def build_sample(self, protocol, data_dir, out) -> str:
        import numpy as np

        n = int(protocol.options.get("sample_tokens", self.default_sample_size))
        tokens = protocol.datamodule_obj(data_dir).eval_split("test")[:n]
        np.savez_compressed(out, tokens=np.array(tokens))
        return f"{len(tokens)} tokens"

    def smoke_model_args(self, arch: str) -> dict:
        return {"vocab_size": 50}

    def smoke_inputs(self, model):
        import torch

        return (torch.randint(0, model.vocab_size, (2, 16)),), (2, 16, model.vocab_size)

    def options(self, cfg: dict) -> dict:
        return {"prompt": cfg.get("card_prompt", "The")}

    _GENERATE = dict(max_new_tokens=40, temperature=0.8, top_k=40, seed=0)

    def card_facts(self, name: str, model, info: dict) -> dict:
        from ..text import generate_text

        facts = super().card_facts(name, model, info)
        facts["sample_text"] = generate_text(model, self.options(info)["prompt"], **self._GENERATE)
        return facts

    def card_use(self, name: str, facts: dict, info: dict) -> list[str]:
        prompt = self.options(info)["prompt"]
        return [
            "from zoo.text import generate_text",
            "",
            f'print(generate_text(model, "{prompt}", max_new_tokens=8, seed=0))',
        ]

    def card_after_use(self, name: str, facts: dict, info: dict) -> list[str]:
        return [f'From the shell: `zoo generate {name} --prompt "{self.options(info)["prompt"]}"`.']

    def card_extra(self, name: str, facts: dict, info: dict) -> list[str]:
        text = facts.get("sample_text")
        if text is None:
            return []
        prompt = self.options(info)["prompt"]
        return [
            "## A generated sample",
            f'`zoo generate {name} --prompt "{prompt}" --max-new-tokens 40 --temperature 0.8 '
            "--top-k 40 --seed 0`:",
            "",
            *(f"> {line}" if line.strip() else ">" for line in text.splitlines()),
            "",
        ]

    def figures(self, name, model, rows, info, out_dir, data_dir=None):
        """Validation perplexity (or bits per character) against training tokens, from the
        run's log (``training_log.json``, written by ``zoo export``), with the checkpoint's
        declared ``baseline`` (its explicit counterpart) on the same axes."""
        import json

        from ..models import checkpoint_dir, list_models

        # a config is data: the pair must be a registered checkpoint, never a path
        shipped = set(list_models(pretrained=True))
        curves = {}
        for who in (name, info.get("baseline")):
            log = checkpoint_dir() / who / "training_log.json" if who in shipped else None
            if log is not None and log.is_file():
                pts = json.loads(log.read_text()).get("val/ppl")
                if pts:
                    curves[who] = pts
        if name not in curves:
            return []
        png = out_dir / f"{name}.validation.png"
        char = self.protocol(info).primary == "bpc"
        _plot_validation(name, curves, int(info.get("tokens_per_step", 0)), char, png)
        return [("validation " + ("bits per character" if char else "perplexity")
                 + " during training", png)]  # fmt: skip


def _plot_validation(name: str, curves: dict, tokens_per_step: int, char: bool, out) -> None:
    import math

    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2), dpi=110)
    ax = fig.subplots()
    for who, pts in curves.items():
        x = [p[0] * tokens_per_step / 1e6 if tokens_per_step else p[0] for p in pts]
        y = [math.log2(p[1]) if char else p[1] for p in pts]
        ax.plot(x, y, "o-" if who == name else "s--", ms=3, lw=1, label=who)
    ax.set_xlabel("training tokens (M)" if tokens_per_step else "training step", fontsize=8)
    ax.set_ylabel("validation bits per character" if char else "validation perplexity",
                  fontsize=8)  # fmt: skip
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{name}: validation during training (the runs' logs)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)


register_task(LanguageModelingSpec())
