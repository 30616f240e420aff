"""zoo.nn.VariationalDropout: one mask per solve, shared over the given dimensions."""

import pytest
import torch

from zoo.nn import VariationalDropout


@pytest.mark.parametrize(
    "shape, shared, mask_shape",
    [
        ((4, 3, 5, 5), (2, 3), (4, 3, 1, 1)),
        ((4, 7, 6), (1,), (4, 1, 6)),
        ((4, 7, 6), (-2,), (4, 1, 6)),
    ],
)
def test_the_mask_is_shared_over_the_given_dimensions(shape, shared, mask_shape):
    torch.manual_seed(0)
    d = VariationalDropout(0.5, shared_dims=shared).train()
    x = torch.ones(shape, dtype=torch.float64)
    y = d(x)
    assert tuple(d.mask.shape) == mask_shape
    assert torch.equal(
        y, d.mask.expand(shape)
    )  # every entry of a shared slice is kept or dropped together
    assert set(y.unique().tolist()) <= {0.0, 2.0}


def test_the_mask_is_fixed_until_reset_and_redrawn_in_place():
    torch.manual_seed(0)
    d = VariationalDropout(0.3, shared_dims=(1,)).train()
    x = torch.randn(8, 5, 16)
    d.reset(x)
    first, ptr = d.mask.clone(), d.mask.data_ptr()
    assert torch.equal(d(x), d(x))  # a solve's calls see one function
    d.reset(x)
    assert d.mask.data_ptr() == ptr and not torch.equal(d.mask, first)
    d.reset((8, 1, 16), dtype=torch.float32)  # a shape alone works too
    assert d.mask.data_ptr() == ptr
    d.reset()  # cleared: the next call draws for its own input
    assert (
        d.mask is None and d(torch.randn(2, 3, 4)).shape == (2, 3, 4) and d.mask.shape == (2, 1, 4)
    )


def test_it_is_unbiased_and_the_identity_when_off():
    torch.manual_seed(0)
    d = VariationalDropout(0.25, shared_dims=(1,)).train()
    d.reset((200_000, 1, 1), dtype=torch.float64)
    kept = (d.mask > 0).double().mean().item()
    assert abs(kept - 0.75) < 0.005  # ~5 standard deviations
    assert abs(d.mask.mean().item() - 1.0) < 0.007  # inverted scaling keeps the mean
    x = torch.randn(3, 4, 5)
    assert d.eval()(x) is x
    off = VariationalDropout(0.0).train()
    off.reset(x)
    assert off(x) is x and off.mask is None


@pytest.mark.parametrize("p", [-0.1, 1.0, True, "0.1"])
def test_a_bad_probability_is_refused(p):
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        VariationalDropout(p)
