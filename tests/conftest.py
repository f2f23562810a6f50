"""Shared test settings."""

import os

import pytest
import torch


# One intra-op thread here and in every subprocess a test starts: results compared across processes then share
# their reduction order (a 2-thread parent against a 1-thread child differs in the last float32 bit).
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _hf_ddpm_cache(tmp_path_factory):
    """One cache folder for the whole session (never the user's): the digits evaluator is trained once."""
    previous = os.environ.get("HF_DDPM_CACHE")
    os.environ["HF_DDPM_CACHE"] = str(tmp_path_factory.mktemp("hf_ddpm_cache"))
    yield os.environ["HF_DDPM_CACHE"]
    if previous is None:
        del os.environ["HF_DDPM_CACHE"]
    else:
        os.environ["HF_DDPM_CACHE"] = previous


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
