"""Per-map contributions of a fully connected layer (camlib.engine.kernels.blockdot) against float64 einsum."""

import pytest
import torch

from camlib.engine.kernels import blockdot


def _reference(weight, x):
    o, (r, k, p) = weight.shape[0], x.shape
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
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double(), _reference(weight, x), rtol=tol, atol=tol)
    # Rows of the weight split over threads, or none: the same values.
    torch.testing.assert_close(blockdot.block_dots(weight, x, threads=1), got, rtol=0, atol=0)
    torch.testing.assert_close(blockdot.block_dots(weight, x, threads=4), got, rtol=0, atol=0)
    # Summed over the maps: the layer's product W·vec(x) (Eq. 1 of the module).
    torch.testing.assert_close(got.sum(1).double(), (x.flatten(1) @ weight.T).double(), rtol=tol * 10, atol=tol * 10)


def test_kernel_and_einsum_fallback_agree(monkeypatch):
    if not blockdot.available():
        pytest.skip("numba is not installed")
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(6, 4 * 9, generator=generator)
    x = torch.randn(2, 4, 9, generator=generator)
    kernel = blockdot.block_dots(weight, x)
    monkeypatch.setattr(blockdot, "_kernel", lambda: None)
    assert not blockdot.available()
    torch.testing.assert_close(blockdot.block_dots(weight, x), kernel, rtol=1e-6, atol=1e-6)



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
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    got = blockdot.active_rows_product(weight, g)
    assert got.shape == (301,) and got.dtype == dtype
    torch.testing.assert_close(got.double(), expected, rtol=tol, atol=tol)
    # Every row inactive: zeros (nothing read); every row active: the plain product.
    assert torch.equal(blockdot.active_rows_product(weight, torch.zeros_like(g)), torch.zeros(301, dtype=dtype))
    dense = torch.randn(150, generator=generator, dtype=dtype)
    torch.testing.assert_close(blockdot.active_rows_product(weight, dense).double(), dense.double() @ weight.double(),
                               rtol=tol, atol=tol)
