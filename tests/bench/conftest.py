"""Benchmark tests: the ``distributed`` marker (torchrun runs; deselect with -m "not distributed")."""


def pytest_configure(config):
    config.addinivalue_line("markers", "distributed: launches torchrun with 2 CPU ranks (gloo over loopback)")
