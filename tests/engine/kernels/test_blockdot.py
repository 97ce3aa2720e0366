"""Per-map contributions of a fully connected layer (camlib.engine.kernels.blockdot) against float64 einsum."""

import pytest
import torch

from camlib.engine.kernels import blockdot
from tests.numerics import U, assert_close_scaled, chain

pytestmark = pytest.mark.numerics


def _reference(weight, x):
    o, (_, k, p) = weight.shape[0], x.shape
    return torch.einsum("okp,rkp->rko", weight.double().view(o, k, p), x.double())


@pytest.mark.parametrize("vectors", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_block_dots_equal_float64_einsum(vectors, dtype):
    generator = torch.Generator().manual_seed(0)
    k, p, o = 5, 7, 11
    weight = torch.randn(o, k * p, generator=generator, dtype=dtype)
    x = torch.randn(vectors, k, p, generator=generator, dtype=dtype)
    got = blockdot.block_dots(weight, x)
    assert got.shape == (vectors, k, o) and got.dtype == dtype
    # Dot products of p = 7 terms: off by chain(7) of Σ_p |W x| (in the dtype's roundoff), per entry.
    unit = U if dtype == torch.float32 else 2.0 ** -53
    terms = _reference(weight.abs(), x.abs())
    assert_close_scaled(got, _reference(weight, x), terms, chain(p) / U * unit, "block dots")
    # Rows of the weight split over threads, or none: the same values.
    torch.testing.assert_close(blockdot.block_dots(weight, x, threads=1), got, rtol=0, atol=0)
    torch.testing.assert_close(blockdot.block_dots(weight, x, threads=4), got, rtol=0, atol=0)
    # Summed over the maps: the layer's product W·vec(x) (Eq. 1 of the module), 35 terms summed in
    # two orders: chain(7, 5) + chain(35) of Σ |W x| over all the terms.
    assert_close_scaled(got.sum(1), x.flatten(1) @ weight.T, terms.sum(1), (chain(p, k) + chain(k * p)) / U * unit,
                        "block dots summed over the maps")


def test_kernel_and_einsum_fallback_agree(monkeypatch):
    if not blockdot.available():
        pytest.skip("numba is not installed")
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(6, 4 * 9, generator=generator)
    x = torch.randn(2, 4, 9, generator=generator)
    kernel = blockdot.block_dots(weight, x)
    monkeypatch.setattr(blockdot, "_kernel", lambda: None)
    assert not blockdot.available()
    # Two float32 orders of 9-term dot products: twice chain(9) of Σ |W x|, per entry.
    assert_close_scaled(blockdot.block_dots(weight, x), kernel, _reference(weight.abs(), x.abs()), 2 * chain(9),
                        "einsum against the kernel")



def test_block_dots_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="does not take 4 maps of 9 values"):
        blockdot.block_dots(torch.zeros(3, 35), torch.zeros(1, 4, 9))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_active_rows_product_equals_the_full_product(dtype):
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(150, 301, generator=generator, dtype=dtype)  # 3 chunks of 64 rows at most
    g = torch.randn(150, generator=generator, dtype=dtype)
    g[torch.rand(150, generator=generator) < 0.4] = 0  # a ReLU's inactive rows: ~90 active, 2 chunks
    expected = g.double() @ weight.double()
    # Products of 150 terms (the active ones, by chunks of 64: gemv, then added): chain(64, 3) of
    # Σ_o |g_o W_o| per entry, ≤ chain(150) for any order; in the dtype's roundoff.
    unit = U if dtype == torch.float32 else 2.0 ** -53
    got = blockdot.active_rows_product(weight, g)
    assert got.shape == (301,) and got.dtype == dtype
    assert_close_scaled(got, expected, g.double().abs() @ weight.double().abs(), chain(150) / U * unit, "active rows")
    # Every row inactive: zeros (nothing read); every row active: the plain product.
    assert torch.equal(blockdot.active_rows_product(weight, torch.zeros_like(g)), torch.zeros(301, dtype=dtype))
    dense = torch.randn(150, generator=generator, dtype=dtype)
    assert_close_scaled(blockdot.active_rows_product(weight, dense), dense.double() @ weight.double(),
                        dense.double().abs() @ weight.double().abs(), chain(150) / U * unit, "every row active")
