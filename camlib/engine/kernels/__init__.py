"""Compiled CPU kernels (numba) and the tensor code they replace where numba is missing."""
