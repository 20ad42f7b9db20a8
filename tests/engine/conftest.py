"""Fixtures shared by the engine tests (no QGIS here)."""
import pytest


@pytest.fixture
def one_torch_thread():
    """Tiny nets: one intra-op thread is faster and far steadier on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
