"""tests/numerics.py, the tolerance helper of the numeric tests: it passes what rounding allows,
fails what a real error does, and refuses a tolerance too loose to tell them apart."""

import math

import pytest
import torch
import torch.nn as nn

from tests.numerics import U, assert_close_scaled, chain, fan_ins


def test_chain_is_deterministic_for_short_sums_and_a_random_walk_for_long_ones():
    assert chain(4) == 4 * U and chain(9) == 9 * U  # n ≤ 9: n·u
    assert chain(100) == 30 * U and chain(100, 4) == 34 * U  # 3√n, layers add


def test_a_scale_not_each_entry():
    expected = torch.tensor([[10.0, 0.0, -3.0], [1e-3, 2e-3, 0.0]])
    near = expected + torch.tensor([[1e-5, 1e-5, 0.0], [1e-9, 0.0, 1e-9]])
    # An exact 0 off by 1e-5 passes (no "relative inf"): the row's scale is 10.
    assert_close_scaled(near, expected, torch.tensor([[10.0], [2e-3]]), 1e-5, "rows")
    with pytest.raises(AssertionError, match=r"worst at \(1, 0\)"):  # row 1 has its own, smaller scale
        assert_close_scaled(near + torch.tensor([[0, 0, 0], [1e-7, 0, 0]]), expected, torch.tensor([[10.0], [2e-3]]),
                            1e-5, "rows")


@pytest.mark.parametrize("error", ["1 %", "sign", "lost", "nan"])
def test_real_errors_fail(error):
    expected = torch.tensor([0.5, -2.0, 1.0, 0.0])
    actual = expected.clone()
    if error == "1 %":
        actual[1] *= 1.01
    elif error == "sign":
        actual[1] = -actual[1]
    elif error == "lost":
        actual[1] = 0.0
    else:
        actual[0] = math.nan
    with pytest.raises(AssertionError):
        assert_close_scaled(actual, expected, expected.abs().max(), 1e-4, "α")


def test_a_tolerance_that_could_not_fail_is_refused():
    expected = torch.tensor([[1.0, 0.5], [100.0, 3.0]])
    with pytest.raises(ValueError, match="could not see a 1 % error"):
        assert_close_scaled(expected, expected, 100.0, 0.01, "α")  # one scale: 1 % of the largest value
    with pytest.raises(ValueError, match="could not see a 1 % error"):  # per entry: the row's largest counts
        assert_close_scaled(expected, expected, torch.tensor([[200.0, 200.0], [1.0, 1.0]]), 1e-4, "α")
    assert_close_scaled(expected, expected, torch.tensor([[1.0], [100.0]]), 1e-3, "α")  # per row: fine


def test_fan_ins_read_a_forward_pass():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2)).eval()
    assert fan_ins(net, torch.rand(1, 3, 6, 6)) == [27, 1, 16, 4]
    assert fan_ins(lambda x: x.mean((2, 3)) @ torch.ones(3, 5), torch.rand(2, 3, 4, 4)) == [16, 3]
