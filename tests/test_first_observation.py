"""recipes/latent_ode/first_observation_mse.py: the split of the PhysioNet error by first
observations, and the reference ODE-RNN's scoring (its output at time 0 is the observed value)."""

from __future__ import annotations

import pytest
import torch

from zoo.tasks.time_series import MaskedMSE


@pytest.fixture
def script(recipe_script):
    return recipe_script("latent_ode/first_observation_mse.py")


def test_first_observations_are_marked_per_series_and_variable(script):
    mask = torch.tensor([[[0.0, 1], [1, 1], [1, 0]]])  # (1, T=3, D=2)
    first = script.first_observation_mask(mask)
    assert first.tolist() == [[[0.0, 1], [1, 0], [0, 0]]]


def test_time_zero_given_counts_the_points_at_time_zero_as_exact(script):
    times = torch.tensor([0.0, 0.5, 1.0])
    values = torch.tensor([[[1.0, 2.0], [3.0, 0.0], [5.0, 6.0]]], dtype=torch.float64)
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    pred = torch.zeros_like(values)
    out = script.time_zero_given(pred, values, times)
    assert out[0, 0].tolist() == [1.0, 2.0] and out[0, 1:].abs().sum() == 0
    # by hand: variable 0 has points at t=0 (given, error 0) and t=0.5 (error 9): mean 4.5;
    # variable 1 at t=0 (given) and t=1 (error 36): mean 18; the series' average 11.25
    m = MaskedMSE()
    m.update(out, values, mask)
    assert abs(float(m.compute()["mse"]) - 11.25) < 1e-6
    # scored plainly: (1 + 9) / 2 = 5 and (4 + 36) / 2 = 20, average 12.5
    plain = MaskedMSE()
    plain.update(pred, values, mask)
    assert abs(float(plain.compute()["mse"]) - 12.5) < 1e-6
