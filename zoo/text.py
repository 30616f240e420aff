"""Text in and out of the zoo's language models: ``encode``/``decode`` with the vocabulary a
checkpoint ships (``model.tokenizer``), and ``generate_text`` behind ``zoo generate``."""

from __future__ import annotations

import torch

__all__ = ["encode", "decode", "generate_text"]


def _tok(model) -> dict:
    tok = getattr(model, "tokenizer", None)
    if not tok:
        raise ValueError(
            "this model carries no vocabulary (model.tokenizer); load a pretrained text model"
        )
    return tok


def encode(model, text: str) -> torch.Tensor:
    """Token ids ``(1, T)`` of ``text`` with the model's vocabulary (unknown words -> ``<unk>``)."""
    from ._vocab import Vocab, word_tokenize

    tok = _tok(model)
    vocab = Vocab(tok["vocab"])
    pieces = list(text) if tok["level"] == "char" else word_tokenize(text)
    if not pieces:
        raise ValueError("the prompt is empty; give at least one word (or character)")
    ids = vocab.encode(pieces)
    if all(i == vocab.unk for i in ids):
        import warnings

        warnings.warn(
            f"every token of the prompt {text!r} is out of the vocabulary ({len(vocab)} "
            f"{tok['level']}s): the model sees only <unk>",
            UserWarning,
            stacklevel=2,
        )
    return torch.tensor([ids], dtype=torch.long)


def decode(model, ids) -> str:
    from ._vocab import Vocab

    tok = _tok(model)
    return Vocab(tok["vocab"]).decode(ids, sep="" if tok["level"] == "char" else " ")


def generate_text(
    model,
    prompt: str,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: int | None = 40,
    seed: int | None = 0,
    on_text=None,
) -> str:
    """Continue ``prompt``; returns the prompt's tokens and the continuation as text.

    ``on_text(piece)``, if given, is called with the prompt's text and then with each new
    token's text as soon as it is sampled (what ``zoo generate`` prints, flushed, as it goes);
    the pieces joined are the returned text.
    """
    ids = encode(model, prompt)
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    text = decode(model, ids[0])
    if on_text is not None:
        on_text(text)
    out = [ids]
    for nxt in model.stream(ids, max_new_tokens, temperature=temperature, top_k=top_k, generator=g):
        out.append(nxt)
        if on_text is not None:
            full = decode(model, torch.cat(out, 1)[0])
            on_text(full[len(text) :])
            text = full
    return decode(model, torch.cat(out, 1)[0])
