"""FFJORD on images: the log-density is the change of variables of the whole map (float64,
against the brute-force Jacobian determinant, one CNF and the multiscale layout), sampling
inverts the flow, the 256-level scale and bits/dim, pixel-range checks, flow matching on images,
and zoo eval of a saved image flow on Fashion-MNIST files."""

from __future__ import annotations

import math

import pytest
import torch

import zoo

D = torch.float64


def _flow(n_scales: int, size: int = 4, **kw):
    torch.manual_seed(0)
    args = dict(img_size=size, n_scales=n_scales, hidden=(4,), trace="exact", rtol=1e-8,
                atol=1e-8) | kw  # fmt: skip
    return zoo.create_model("ffjord_image_tiny", **args).double().eval()


@pytest.mark.parametrize(
    "n_scales,size,kw",
    [
        (0, 2, {}),
        (0, 4, {"hidden": (3, 4), "strides": (2, 1, -2)}),  # a multi-resolution field (4 -> 2 -> 4)
        pytest.param(2, 4, {}, marks=pytest.mark.slow),  # the multiscale case: ~1 min
    ],
)
def test_log_prob_is_the_change_of_variables_of_the_whole_map(n_scales, size, kw):
    m = _flow(n_scales, size, **kw)
    d = size * size
    v = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(1), dtype=D) * 255
    logp = m.log_prob(v)

    def whole_map(x_flat):  # pixels / 256 -> every base-space part, concatenated
        y, _ = m._logit(x_flat.reshape(1, 1, size, size))
        parts, _ = m._flow(y)
        return torch.cat([p.flatten(1) for p in parts], 1)[0]

    for i in range(2):
        x = (v[i] / 256).reshape(-1)
        jac = torch.autograd.functional.jacobian(whole_map, x)
        z = whole_map(x)
        ref = -0.5 * (z.pow(2).sum() + d * math.log(2 * math.pi)) + torch.linalg.slogdet(jac)[1]
        assert abs(float(logp[i]) - float(ref - d * math.log(256))) < 1e-6


def test_sample_inverts_the_multiscale_flow_and_bits_per_dim():
    m = _flow(2, trace="hutchinson")
    s = m.sample(3, generator=torch.Generator().manual_seed(4))
    assert s.shape == (3, 1, 4, 4) and float(s.min()) >= 0 and float(s.max()) < 256
    g = torch.Generator().manual_seed(4)
    want = [torch.randn(3, *sh, generator=g, dtype=D) for sh in m._shapes()]
    with torch.no_grad():
        parts, _ = m.transform(s)
    for p, w in zip(parts, want):
        assert torch.allclose(p, w, atol=1e-5)
    assert [tuple(p.shape[1:]) for p in parts] == [(2, 2, 2), (8, 1, 1)]  # 8 + 8 = 16 dims
    lp = torch.tensor([-100.0], dtype=D)
    assert torch.allclose(m.bits_per_dim(lp), 100 / (16 * math.log(2)) * torch.ones(1, dtype=D))


def test_uint8_pixels_are_dequantized_reproducibly_and_normalized_input_is_refused():
    m = _flow(0, trace="hutchinson")
    v = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    torch.manual_seed(5)  # the Hutchinson probe comes from the global generator
    a = m.log_prob(v, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    b = m.log_prob(v, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    x = m.dequantize(v, torch.Generator().manual_seed(0)) * 256
    assert bool(((x - v.double()) >= 0).all() and ((x - v.double()) < 1).all())
    with pytest.raises(ValueError, match="pass raw pixels"):
        m.log_prob(torch.randn(2, 1, 4, 4, dtype=D))
    with pytest.raises(ValueError, match=r"\(batch, 1, 4, 4\)"):
        m.log_prob(torch.zeros(2, 3, 4, 4, dtype=D))
    with pytest.raises(ValueError, match="divisible by 2 \\*\\* n_scales"):
        zoo.create_model("ffjord_image_tiny", img_size=6, n_scales=2)


def test_flow_matching_on_images_and_its_refusal_for_multiscale():
    from zoo.nn import flow_matching_loss
    from zoo.tasks.density import DensityEstimation

    m = _flow(0, trace="hutchinson")
    y = m.to_flow_space(torch.randint(0, 256, (4, 1, 4, 4), dtype=torch.uint8))
    loss = flow_matching_loss(m.field, y, m.cnf.T, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and m.field.layers[0].conv.weight.grad is not None
    with pytest.raises(ValueError, match="stacks 4 CNFs"):
        DensityEstimation(arch="ffjord_multiscale_tiny", objective="flow_matching")
    task = DensityEstimation(arch="ffjord_multires_tiny", objective="flow_matching")  # one CNF
    assert [c.conv.stride for c in task.model.field.layers] == [(2, 2)] * 2 + [(1, 1)] + [
        (2, 2)
    ] * 2


@pytest.mark.parametrize(
    "kw, match",
    [
        (
            {"strides": (2, 1, -2, 1)},
            r"one of 1, 2 \(down\) or -2 \(up\) for each of the field's 5",
        ),
        ({"strides": (2, 2, 1, 1, -2)}, "downsample 2 times but upsample 1 times"),
        ({"strides": (-2, 1, 1, 1, 2)}, "upsample before they downsample"),
        ({"strides": (2, 2, 3, -2, -2)}, r"one of 1, 2 \(down\) or -2 \(up\)"),
        ({"img_size": 30}, "halve a 15-pixel map, which is odd"),
    ],
)
def test_bad_field_strides_are_refused_with_the_reason(kw, match):
    with pytest.raises(ValueError, match=match):
        zoo.create_model("ffjord_multires_tiny", **kw)


def test_zoo_eval_of_an_image_flow_on_fashion_mnist_files(tmp_path, monkeypatch):
    from _formats import write_fashion_mnist

    from zoo.evaluate import evaluate

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    write_fashion_mnist(tmp_path / "data", 32, 16)
    torch.manual_seed(0)
    m = zoo.create_model("ffjord_multiscale_tiny", hidden=(4,), rtol=1e-3, atol=1e-3)
    m.pretrained_cfg = {"name": "my_image_flow", "task": "density-estimation",
                        "dataset": "fashion_mnist", "datamodule": "fashion_mnist",
                        "datamodule_args": {"pixels": True, "val_size": 0}}  # fmt: skip
    m.save_pretrained(tmp_path / "flow")
    runs = [evaluate(str(tmp_path / "flow"), data_dir=str(tmp_path / "data"), limit=8)
            for _ in range(2)]  # fmt: skip
    r = runs[0]
    assert r["num_samples"] == 8 and r["metrics"] == runs[1]["metrics"]  # seeded dequantization
    assert abs(r["metrics"]["bpd"] - r["metrics"]["nll"] / (784 * math.log(2))) < 1e-3
