"""DEQ-Transformer family: text data modules (tiny files in the original formats), causality,
memory, generation and bad input."""

import tarfile
import warnings

import pytest
import torch

import zoo
from zoo.data import BrownDataModule, PTBDataModule, SOTUDataModule, WikiText103DataModule
from zoo.data._text import StreamSegments, Vocab, word_tokenize
from zoo.models.deq_transformer import non_embedding_params

SMALL = dict(vocab_size=40, d_model=16, n_heads=2, d_ff=32, tgt_len=8)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    warnings.simplefilter("ignore")


def test_word_tokenize_and_vocab():
    assert word_tokenize("It's 1,000 dollars.") == ["it's", "1,000", "dollars", "."]
    v = Vocab.build([["a", "b", "a"], ["c"]], max_size=4)
    assert v.itos[:2] == ["<unk>", "<eos>"] and v.encode(["a", "zzz"]) == [2, v.unk]


def test_stream_segments_continue_rows():
    ds = StreamSegments(torch.arange(41), batch_size=2, bptt=5)
    x0, y0 = ds[0]
    x1, _ = ds[1]
    assert torch.equal(y0[:, :-1], x0[:, 1:]) and int(x1[0, 0]) == int(x0[0, -1]) + 1


def test_sotu_temporal_split(tmp_path):
    src = tmp_path / "src" / "sotu" / "data"
    src.mkdir(parents=True)
    for year, word in ((1800, "early"), (2005, "middle"), (2015, "late")):
        (src / f"{year}_someone_x.txt").write_text(f"{word} words here.\n\nmore {word} text")
    (tmp_path / "text").mkdir()
    with tarfile.open(tmp_path / "text" / "sotu.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "src" / "sotu", arcname="sotu")
    dm = SOTUDataModule(data_dir=str(tmp_path), batch_size=1, bptt=4)
    dm.setup()
    dec = {s: dm.vocab.decode(t) for s, t in dm.streams.items()}
    assert "early" in dec["train"] and "middle" not in dec["train"]
    assert (
        dec["val"].startswith("<unk>") and "late" not in dec["val"]
    )  # 'middle' is unseen in train
    assert dm.stats()["test_unk_rate"] > 0


def test_brown_split_strips_tags(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for k in range(10):
        (src / f"ca{k + 1:02d}").write_text(f"\n\tThe/at jury{k}/nn said/vbd ./.\n")
    (tmp_path / "text").mkdir()
    with tarfile.open(tmp_path / "text" / "brown.tar.gz", "w:gz") as tf:
        for f in sorted(src.iterdir()):
            tf.add(f, arcname=f.name)
    dm = BrownDataModule(data_dir=str(tmp_path))
    dm.setup()
    assert "/" not in dm.vocab.decode(dm.streams["train"])
    assert dm.vocab.decode(dm.streams["val"]).split()[1] == "<unk>"  # jury8 only in val
    assert dm.streams["train"].numel() == 8 * 5


def test_wikitext_and_ptb_formats(tmp_path):
    (tmp_path / "wikitext-103").mkdir()
    for f in ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"):
        (tmp_path / "wikitext-103" / f).write_text(" = Title = \n\n the cat sat on the <unk> . \n")
    (tmp_path / "ptb").mkdir()
    for f in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        (tmp_path / "ptb" / f).write_text(" the cat sat \n the dog ran \n")
    w = WikiText103DataModule(data_dir=str(tmp_path), vocab_size=None)
    w.setup()
    assert w.vocab.decode(w.streams["train"]).split()[:4] == ["=", "Title", "=", "<eos>"]
    p = PTBDataModule(data_dir=str(tmp_path))
    p.setup()
    assert p.stats()["train_tokens"] == 8
    with pytest.raises(FileNotFoundError, match="download=True"):
        PTBDataModule(data_dir=str(tmp_path / "nothing")).setup()


@pytest.mark.parametrize("arch", ["deq_transformer_tiny", "transformer_tiny"])
def test_causal_exactly(arch):
    """Changing token t never changes the logits before t, even with an inexact DEQ solve."""
    torch.manual_seed(0)
    m = zoo.create_model(arch, **SMALL).eval()
    x = torch.randint(0, 40, (2, 8))
    y = x.clone()
    y[:, 5] = (y[:, 5] + 1) % 40
    with torch.no_grad():
        a, b = m(x), m(y)
    assert torch.equal(a[:, :5], b[:, :5])
    assert not torch.equal(a[:, 5:], b[:, 5:])


def test_same_non_embedding_size():
    a = non_embedding_params(zoo.create_model("deq_transformer_tiny"))
    b = non_embedding_params(zoo.create_model("transformer_tiny"))
    assert abs(a - b) / a < 0.1


def test_long_sequences_use_memory_or_fail_clearly():
    m = zoo.create_model("deq_transformer_tiny", **SMALL).eval()
    with pytest.raises(ValueError, match="exceeds the context 8"):
        m(torch.randint(0, 40, (1, 20)))
    m2 = zoo.create_model("transformer_tiny", **{**SMALL, "mem_len": 8}).eval()
    out, mems = m2(torch.randint(0, 40, (1, 20)), return_mems=True)
    assert out.shape == (1, 20, 40) and mems[0].shape == (1, 8, 16)


def test_bad_tokens_and_generate():
    m = zoo.create_model("deq_transformer_tiny", **SMALL)
    with pytest.raises(ValueError, match=r"\[0, 40\)"):
        m(torch.tensor([[3, 40]]))
    with pytest.raises(ValueError, match="non-empty"):
        m.generate(torch.zeros(1, 0, dtype=torch.long), 3)
    g = torch.Generator().manual_seed(0)
    out = m.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=5, top_k=5, generator=g)
    assert out.shape == (1, 8) and m.training


def test_deq_lm_trains_with_phantom_and_jr():
    m = zoo.create_model(
        "deq_transformer_tiny", **SMALL, grad={"name": "phantom", "steps": 2}, jac_reg_samples=1
    ).train()
    x = torch.randint(0, 40, (2, 8))
    loss = torch.nn.functional.cross_entropy(m(x).reshape(-1, 40), x.reshape(-1)) + m.jac_loss
    loss.backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_float64_attention_stays_float64():
    """The attention softmax upcasts bf16/fp16 to float32 but never downcasts float64: a float64
    DEQ-LM solve reaches 1e-12 (with a float32 softmax it stagnated near 1e-9)."""
    import zoo

    torch.manual_seed(0)
    m = zoo.create_model(
        "deq_transformer_tiny", vocab_size=50, d_model=16, n_heads=2, d_ff=32, tgt_len=6,
        mem_len=0, dropout=0.0, solver={"name": "anderson", "tol": 1e-12, "max_iter": 200},
    ).double().eval()  # fmt: skip
    m(torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(1)))
    cost = m.cost()
    assert cost.converged and cost.residual < 1e-12, cost


def _window_reference(m, ids, n, seed):
    """Re-encode the last ``context_len`` tokens for every new token (the decoder before the
    incremental one): the same model, the same sampler, no cache."""
    g = torch.Generator().manual_seed(seed)
    out, ctx, logits = ids, m.context_len(), []
    with torch.no_grad():
        for _ in range(n):
            step = m(out[:, -ctx:])[:, -1]
            logits.append(step)
            out = torch.cat([out, m._sample(step, 1.0, None, g)], 1)
    return out, logits


@pytest.mark.parametrize("arch", ["transformer_tiny", "deq_transformer_tiny"])
@pytest.mark.parametrize("mem_len", [0, 12])
def test_incremental_generation_matches_reencoding_the_window(arch, mem_len):
    """Within the context, the cached decoder is the same computation as re-encoding the window
    for every token (float64; the DEQ solved to 1e-11): the same text for the same seed, the
    same next-token logits, and a prompt spanning several segments."""
    extra = {"solver": {"name": "anderson", "m": 5, "tol": 1e-11, "max_iter": 200}}
    m = zoo.create_model(arch, **SMALL, mem_len=mem_len, **(extra if "deq" in arch else {}))
    m = m.double().eval()
    torch.manual_seed(0)
    ids = torch.randint(0, 40, (2, 3 if mem_len == 0 else 10))
    n = m.context_len() - ids.shape[1]  # fills the context exactly
    ref, ref_logits = _window_reference(m, ids, n, seed=3)
    out = m.generate(ids, n, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, ref)
    # the logits the sampler saw, token for token (the cache against a fresh window)
    cache_logits = []
    orig = m._decode

    def spy(*a, **k):
        res = orig(*a, **k)
        cache_logits.append(res[0][:, -1])
        return res

    m._decode = spy
    list(m.stream(ids, n, generator=torch.Generator().manual_seed(3)))
    assert len(cache_logits) == n + (ids.shape[1] - 1) // m.tgt_len  # prefill segments, tokens
    for a, b in zip(cache_logits[-n:], ref_logits, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_generation_past_the_context_keeps_a_bounded_cache():
    """Past the context the cache holds the last ``context_len - 1`` positions, so a query never
    attends to more keys than the model was trained with."""
    m = zoo.create_model("transformer_tiny", **SMALL).eval()
    keys = []
    orig = m.layers[0].attn.forward

    def spy(x, mem, pos, mask, ctx=None):
        keys.append(mask.shape[1])
        return orig(x, mem, pos, mask, ctx)

    m.layers[0].attn.forward = spy
    out = m.generate(torch.tensor([[1, 2]]), 20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 22) and max(keys) == m.context_len() == 8


def test_cached_attention_context_equals_the_graph_path():
    """The no-grad path (the memory's keys/values and the position projection computed once per
    context) equals the per-call path that autograd uses, float64."""
    from zoo.models._transformer_blocks import TransformerCell, causal_mask, sinusoid_positions

    torch.manual_seed(0)
    cell = TransformerCell(16, 2, 32).double()
    mem, z, u = (torch.randn(2, k, 16, dtype=torch.float64) for k in (5, 4, 4))
    cell.set_context(mem, sinusoid_positions(9, 16, dtype=torch.float64), causal_mask(4, 5))
    with torch.no_grad():
        a, a2 = cell(z, u), cell(z + 0.1, u)
    b, b2 = cell(z, u), cell(z + 0.1, u)
    torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-13)
    torch.testing.assert_close(a2, b2.detach(), rtol=0, atol=1e-13)


def test_generate_text_streams_each_token_and_imports_no_lightning():
    """``zoo generate`` prints as it samples: the pieces joined are the returned text; the text
    path (encode, generate, decode) never imports Lightning (seconds of startup)."""
    import subprocess
    import sys

    from zoo.text import generate_text

    m = zoo.create_model("transformer_tiny", **SMALL).eval()
    m.tokenizer = {"level": "word", "vocab": [a + b for a in "abcd" for b in "abcdefghij"][:38]}
    pieces: list[str] = []
    text = generate_text(m, "ab cd", 6, seed=1, on_text=pieces.append)
    assert len(pieces) == 7 and "".join(pieces) == text and text.startswith("ab cd ")
    code = "import sys, zoo.text, zoo.models; print('lightning' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_character_level_data_reports_bits_per_character():
    """A char-level data module's protocol ranks by bits per character; ``evaluate`` returns the
    mean next-character cross-entropy in bits, checked against a direct computation."""
    import math

    from zoo.evaluate import _Clock
    from zoo.tasks import get_task

    spec = get_task("language-modeling")
    cfg = {"name": "x", "dataset": "shakespeare_char", "datamodule": "shakespeare_char"}
    assert spec.protocol(cfg).primary == "bpc"
    assert spec.protocol({**cfg, "dataset": "sotu", "datamodule": "sotu"}).primary == "ppl"
    torch.manual_seed(0)
    m = zoo.create_model("transformer_tiny", **SMALL).eval()
    batches = StreamSegments(torch.randint(0, 40, (161,)), 2, 8)
    with torch.no_grad():
        res = spec.evaluate(
            m, batches, spec.protocol(cfg), torch.device("cpu"), _Clock(torch.device("cpu"))
        )
        nll, count = 0.0, 0
        for x, y in batches:
            logits = m(x).reshape(-1, 40)
            nll += float(torch.nn.functional.cross_entropy(logits, y.reshape(-1), reduction="sum"))
            count += y.numel()
    assert abs(res.metrics["bpc"] - nll / count / math.log(2)) < 1e-3


def test_stop_at_step_ends_the_run_without_touching_the_schedule():
    from types import SimpleNamespace

    from zoo.callbacks import StopAtStep

    cb = StopAtStep(3)
    t = SimpleNamespace(global_step=2, should_stop=False)
    cb.on_train_batch_end(t, None, None, None, 0)
    assert not t.should_stop
    t.global_step = 3
    cb.on_train_batch_end(t, None, None, None, 0)
    assert t.should_stop
    with pytest.raises(ValueError, match="step"):
        StopAtStep(0)


def test_validation_figure_reads_only_registered_checkpoints(tmp_path, monkeypatch):
    """A card's ``baseline`` is data: a path in it is never read, only a registered checkpoint's
    log."""
    import zoo.tasks.language_model as lm
    from zoo.tasks import get_task

    seen = {}
    monkeypatch.setattr(lm, "_plot_validation", lambda n, curves, *a: seen.update(curves))
    spec = get_task("language-modeling")
    name = "transformer_tiny.shakespeare_char"
    info = {**zoo.model_info(name), "baseline": "../../../../tmp/evil"}
    out = spec.figures(name, None, [], info, tmp_path)
    assert len(out) == 1 and list(seen) == [name]
    assert spec.figures("../evil", None, [], info, tmp_path) == []


def test_pretraining_is_the_shallow_unrolled_block_then_the_equilibrium():
    """locuslab/deq's pretrain_steps: in pretraining the DEQ's block is applied pretrain_depth
    times from zeros with plain backprop (compared in float64 with a hand-written unroll of the
    same block); no solve runs, so there is no cost record and no Jacobian term; off again,
    the solve is back."""
    torch.manual_seed(0)
    m = zoo.create_model("deq_transformer_tiny", **SMALL, dropout=0.0, pretrain_depth=3,
                         jac_reg_samples=1).double().train()  # fmt: skip
    x = torch.randint(0, 40, (2, 8))
    m.pretraining = True
    out = m(x)
    u = m.inject(m.embed(x) * m.d_model**0.5)
    pos, mask = m._positions(8, 0, u)
    m.deq.cell.cell.set_context(None, pos, mask)
    z = u.new_zeros(16, SMALL["d_model"])
    for _ in range(3):
        z = m.deq.cell(z, u)
    ref = m.head(m.ln_f(z.view(2, 8, -1)))
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    assert m.cost().nfe_forward == 0 and m.jac_loss is None
    out.sum().backward()
    cell_params = list(m.deq.cell.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cell_params)
    m.pretraining = False
    m(x)
    assert m.cost().nfe_forward > 0 and m.jac_loss is not None
    m.pretraining = True
    m.eval()
    m(x)  # evaluation always solves
    assert m.cost().nfe_forward > 0
    with pytest.raises(ValueError, match="pretrain_depth"):
        zoo.create_model("deq_transformer_tiny", **SMALL, pretrain_depth=0)


def test_lm_task_pretrains_for_its_first_steps_and_refuses_a_model_without_a_solve():
    from types import SimpleNamespace

    from zoo.tasks import LanguageModeling

    task = LanguageModeling("deq_transformer_tiny", dict(SMALL), pretrain_steps=2)
    task.configure_model()
    fake = SimpleNamespace(global_step=0)
    type(task).global_step = property(lambda self: fake.global_step)
    try:
        task.train()
        seen = []
        for step in range(4):
            fake.global_step = step
            seen.append(task._pretraining())
        assert seen == [True, True, False, False]
    finally:
        del type(task).global_step
    bad = LanguageModeling("transformer_tiny", dict(SMALL), pretrain_steps=2)
    with pytest.raises(ValueError, match="needs an equilibrium model"):
        bad.configure_model()
    with pytest.raises(ValueError, match="pretrain_steps"):
        LanguageModeling("deq_transformer_tiny", dict(SMALL), pretrain_steps=-1)


def test_jacobian_schedule_follows_the_reference_loop_and_skips_the_term_when_off():
    """jac_reg_freq / jac_reg_increment against a transcription of locuslab/deq's training loop
    (the weight grows by 0.1 when a finished step after pretraining is a multiple of
    jac_incremental; each step draws whether the term is on): the same weights on the steps that
    have the term, about the drawn fraction of steps with it, the same draws when asked again
    (a resumed run), and no term computed by the DEQ on a step without it."""
    from types import SimpleNamespace

    from zoo.tasks import LanguageModeling

    args = dict(SMALL, jac_reg_samples=1)
    task = LanguageModeling("deq_transformer_tiny", args, jac_reg_weight=0.5, jac_reg_freq=0.4,
                            jac_reg_increment=5, pretrain_steps=7)  # fmt: skip
    task.configure_model()
    fake = SimpleNamespace(global_step=0)
    type(task).global_step = property(lambda self: fake.global_step)
    try:
        task.train()
        ref_w, got, x = 0.5, [], torch.randint(0, 40, (2, 8))
        for step in range(60):
            fake.global_step = step
            w = task._arm_jac_reg()
            assert task._arm_jac_reg() == w  # the draw is a function of the step
            got.append(w)
            if step < 7:
                assert w == 0.0  # pretraining: no term
            else:
                assert w == 0.0 or abs(w - ref_w) < 1e-12, (step, w, ref_w)
                if step < 16:
                    task.model.pretraining = False
                    task.model(x)
                    assert (task.model.jac_loss is not None) == (w > 0)
            if step + 1 > 7 and (step + 1) % 5 == 0:  # the reference, after its step
                ref_w += 0.1
        on = sum(w > 0 for w in got[7:]) / len(got[7:])
        assert 0.2 < on < 0.6, on
        always = LanguageModeling("deq_transformer_tiny", args, jac_reg_weight=0.5)
        always.configure_model()
        always.train()
        fake.global_step = 7
        assert always._arm_jac_reg() == 0.5  # the defaults: a constant weight on every step
    finally:
        del type(task).global_step
    for bad in (dict(jac_reg_freq=0.0), dict(jac_reg_freq=1.5), dict(jac_reg_increment=-1),
                dict(jac_reg_increment=2.5)):  # fmt: skip
        with pytest.raises(ValueError, match="jac_reg_"):
            LanguageModeling("deq_transformer_tiny", dict(SMALL), **bad)


def test_correction_loss_weights_the_intermediate_states():
    from zoo.tasks.language_model import correction_loss

    torch.manual_seed(0)
    m = zoo.create_model("deq_transformer_tiny", **SMALL, correction_states=2,
                         grad={"name": "phantom", "steps": 2}).train()  # fmt: skip
    x = torch.randint(0, 40, (2, 8))
    out = m(x)
    assert len(m.correction_logits) == 2
    assert all(lg.shape == out.shape for lg in m.correction_logits)
    ce = [
        torch.nn.functional.cross_entropy(lg.reshape(-1, 40), x.reshape(-1))
        for lg in m.correction_logits
    ]
    got = correction_loss(m.correction_logits, x, 0.5)
    assert torch.allclose(got, 0.25 * ce[0] + 0.5 * ce[1])
    got.backward()
    assert m.inject.weight.grad is not None
    assert correction_loss([], x, 0.5) is None
    m.eval()
    with torch.no_grad():
        m(x)
    assert m.correction_logits == []


def test_warm_start_never_carries_a_state_into_another_stream():
    """A DEQ-LM that warm-starts each segment from the previous one's equilibrium must start
    validation, test and each training epoch from zeros, not from the last training batch."""
    from zoo.tasks import LanguageModeling

    args = dict(SMALL, warm_start=True, solver={"name": "anderson", "max_iter": 3, "tol": 0.0})
    task = LanguageModeling("deq_transformer_tiny", args)
    task.configure_model()
    model = task.model.eval()
    g = torch.Generator().manual_seed(0)
    ids, other = torch.randint(0, 40, (2, 2, 8), generator=g)
    with torch.no_grad():
        cold = model(ids)
        model(other)  # the state a training batch would leave behind
        stale = model(ids)
        assert not torch.allclose(stale, cold, atol=1e-4)  # the start matters at 3 iterations
        for hook in (
            task.on_validation_epoch_start,
            task.on_test_epoch_start,
            task.on_train_epoch_start,
            task.on_validation_epoch_end,
        ):
            model(other)
            hook()
            torch.testing.assert_close(model(ids), cold, rtol=0, atol=0)


def test_joint_solve_stops_each_sequence_on_its_own_and_compaction_drops_finished_ones():
    """A DEQ-LM's positions are coupled within a sequence, never across sequences: a joint
    solve decides per sequence, so each sequence's logits are those of a joint solve of that
    sequence alone (float64), and with ``compact`` a finished sequence is not evaluated again."""
    torch.manual_seed(0)
    solver = {"name": "anderson", "m": 4, "tol": 1e-7, "max_iter": 60, "joint": True}
    m = zoo.create_model(
        "deq_transformer_tiny", **dict(SMALL, mem_len=0, dropout=0.0), solver=solver
    ).double().eval()  # fmt: skip
    ids = torch.randint(0, 40, (4, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = m(ids)
        full_rows = m.deq.info.stats.rows_evaluated
        alone = torch.cat([m(ids[i : i + 1]) for i in range(4)])
        alone_rows = []
        for i in range(4):
            m(ids[i : i + 1])
            alone_rows.append(m.deq.info.stats.rows_evaluated)
        m.deq.solver = m.deq.solver.replace(compact=True)
        compacted = m(ids)
        stats = m.deq.info.stats
    torch.testing.assert_close(whole, alone, rtol=0, atol=1e-10)
    # a compacted batch runs other matrix shapes: equal up to float64 rounding, not bitwise
    torch.testing.assert_close(compacted, whole, rtol=0, atol=1e-12)
    assert stats.converged and len(set(alone_rows)) > 1  # the sequences stop apart
    assert stats.rows_evaluated == sum(alone_rows) < full_rows


def test_cell_dropout_keeps_one_mask_per_segment_and_is_off_in_eval():
    """Variational dropout in the DEQ block (locuslab/deq's): within one training segment every
    call of the block sees the same mask, so the solve has one function to converge to; the
    next segment draws a new mask; evaluation has no dropout at all."""
    torch.manual_seed(0)
    m = zoo.create_model("deq_transformer_tiny", **SMALL, dropout=0.0, cell_dropout=0.3)
    torch.manual_seed(0)
    plain = zoo.create_model("deq_transformer_tiny", **SMALL, dropout=0.0)
    m, plain = m.double().train(), plain.double()
    x = torch.randint(0, 40, (2, 8))
    m(x)
    cell = m.deq.cell
    masks = [d.mask.clone() for d in (cell.cell.drop_attn, cell.cell.ff[2], cell.cell.drop_ff)]
    assert masks[0].shape == (2, 1, 16) and masks[1].shape == (2, 1, 32)
    assert (masks[1] == 0).any() and (masks[1] > 0).any()
    u = m.inject(m.embed(x) * m.d_model**0.5)
    z = torch.randn(16, 16, dtype=torch.float64)
    assert torch.equal(cell(z, u), cell(z, u))  # one function within the segment
    ptr = cell.cell.ff[2].mask.data_ptr()
    m(x)  # a new segment: new masks, drawn in place (a CUDA-graph-captured solve reads them)
    assert not torch.equal(cell.cell.ff[2].mask, masks[1])
    assert cell.cell.ff[2].mask.data_ptr() == ptr
    m.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(m(x), plain(x))  # the same weights, no dropout in evaluation
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        zoo.create_model("deq_transformer_tiny", **SMALL, cell_dropout=1.0)


def test_weight_norm_block_is_the_same_function_at_init_and_round_trips(tmp_path):
    """wnorm reparametrizes the block's linear maps without changing them at initialization:
    built in float64 with the same seed (the DEQ solved to 1e-12), the outputs agree to 1e-10; a
    saved model loads back to the same outputs."""
    x = torch.randint(0, 40, (2, 8))
    tight = {"solver": {"name": "anderson", "tol": 1e-12, "max_iter": 200}}
    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        for arch, extra in (("deq_transformer_tiny", tight), ("transformer_tiny", {})):
            torch.manual_seed(0)
            a = zoo.create_model(arch, **SMALL, **extra).eval()
            torch.manual_seed(0)
            b = zoo.create_model(arch, **SMALL, **extra, wnorm=True).eval()
            assert any("parametrizations.weight.original1" in k for k in b.state_dict())
            with torch.no_grad():
                assert torch.allclose(a(x), b(x), atol=1e-10, rtol=0)
    finally:
        torch.set_default_dtype(default)
    b = b.float()
    b.save_pretrained(tmp_path / "wn")
    c = zoo.load(str(tmp_path / "wn"))
    with torch.no_grad():
        assert torch.equal(b(x), c(x))


def test_implicit_gradient_with_cell_dropout_and_wnorm_matches_finite_differences():
    """float64: with variational dropout and weight normalization in the block, the implicit
    gradient (a backward solve) of the training loss equals central finite differences of the
    same loss, the masks held fixed by seeding each forward alike."""
    torch.manual_seed(0)
    tight = {"tol": 1e-12, "max_iter": 300}
    m = zoo.create_model(
        "deq_transformer_tiny", **SMALL, dropout=0.0, cell_dropout=0.2, wnorm=True,
        solver={"name": "picard", **tight}, grad={"name": "implicit", **tight},
    ).double().train()  # fmt: skip
    # Picard: this block is contractive, and a plain iteration reaches 1e-12 on every CPU
    # (Anderson's regularized least squares stalls near 1e-5 here on some, e.g. AVX-512)
    x = torch.randint(0, 40, (2, 8))

    def loss():
        torch.manual_seed(7)  # the same masks every time
        out = m(x)
        return torch.nn.functional.cross_entropy(out.reshape(-1, 40), x.reshape(-1))

    g_param = m.deq.cell.cell.ff[0].parametrizations.weight.original0  # weight norm's g
    v_param = m.deq.cell.cell.attn.qkv.parametrizations.weight.original1  # weight norm's v
    loss().backward()
    assert m.cost().converged
    for p, idx in ((g_param, (3, 0)), (v_param, (5, 2))):
        eps, w0 = 1e-6, p.data[idx].item()
        with torch.no_grad():
            p.data[idx] = w0 + eps
            hi = loss().item()
            p.data[idx] = w0 - eps
            lo = loss().item()
            p.data[idx] = w0
        fd = (hi - lo) / (2 * eps)
        assert abs(p.grad[idx].item() - fd) <= 1e-7 * max(1.0, abs(fd)), (p.grad[idx], fd)
