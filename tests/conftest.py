"""Shared test settings."""

import os

import pytest
import torch


# One intra-op thread here and in every subprocess a test starts: results compared across processes then share
# their reduction order (a 2-thread parent against a 1-thread child differs in the last float32 bit).
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def pytest_report_header(config):
    """The machine a run's numbers come from: results of the numerics tests depend on the CPU's vector kernels."""
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 "unknown") if os.path.exists("/proc/cpuinfo") else "unknown"
    return (f"CPU: {model}; {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable); torch {torch.__version__}, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()} (ATEN_CPU_CAPABILITY="
            f"{os.environ.get('ATEN_CPU_CAPABILITY', 'unset')}), {torch.get_num_threads()} thread(s)")


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    """The tiny UNet's config file (tests/training_support.py), for the training runs of a test module."""
    from training_support import write_tiny_config

    return write_tiny_config(tmp_path_factory.mktemp("config"))


@pytest.fixture()
def hub_offline(monkeypatch):
    """HF_HUB_OFFLINE=1 for the test and the processes it starts: nothing may reach for the Hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
