"""No host–device synchronisation in the scheduler's per-step paths, counted with tests/host_syncs.py."""

import pytest
import torch

from hf_ddpm import DDPMDocScheduler
from host_syncs import HostSyncCounter
from test_scheduler import SHAPE

def test_hot_paths_make_no_host_sync():
    """add_noise, get_velocity, q_posterior, p_mean_variance and step read nothing back from tensors — host ints stay
    on the host, per-sample tensors (here CPU stand-ins for device tensors) are indexed and checked where they live:
    0 syncs per call, counted with every check on (zero SNR with ε adds the device-side x̂_0 check)."""
    for config in [dict(), dict(clip_sample=False, variance_type="fixed_large"), dict(thresholding=True),
                   dict(variance_type="learned_range", prediction_type="v_prediction"),
                   dict(rescale_betas_zero_snr=True, variance_type="learned")]:
        s = DDPMDocScheduler(**config)
        channels = SHAPE[1] * (2 if s.config.variance_type.startswith("learned") else 1)
        chain = s.chain(50)
        s.set_timesteps(50)
        x0, noise = torch.rand(SHAPE) * 2 - 1, torch.randn(SHAPE)
        out = torch.randn(SHAPE[0], channels, *SHAPE[2:]).tanh()
        t_train, t_chain, g = torch.tensor([0, 998]), s.timesteps[[3, 49]], [torch.Generator().manual_seed(i) for i in range(2)]
        with HostSyncCounter() as syncs:
            x_t = s.add_noise(x0, noise, t_train)
            s.get_velocity(x0, noise, t_train)
            s.q_posterior(x0, x_t, t_train)
            s.p_mean_variance(out, x_t, t_train)
            s.q_posterior(x0, x_t, t_chain, chain=chain)
            s.p_mean_variance(out, x_t, t_chain, chain=chain)
            s.step(out, t_chain, x_t, generator=g)
            s.add_noise(x0, noise, 17)
            s.p_mean_variance(out, x_t, 17)
            s.step(out, 500, x_t, generator=g)
            s.step(out, 0, x_t)
        assert syncs.count == 0, f"{config}: {syncs.report()}"


def test_host_sync_counter_sees_every_read():
    """The counter behind the test above: each way of reading a tensor on the host is counted, a device-side
    check is not."""
    t, z = torch.tensor([3, 4]), torch.tensor(1)
    with HostSyncCounter() as syncs:
        int(z), bool(z), float(z), z.item(), t.tolist(), t.cpu(), t.numpy(), [0, 1][z], f"{z}", t.nonzero()
        torch._assert_async((t > 0).all(), "no read-back")
    assert [name for name, _ in syncs.calls] == ["int", "bool", "float", "item", "tolist", "cpu", "numpy", "index",
                                                 "format", "nonzero"]
    assert {where.rsplit(":", 1)[0] for _, where in syncs.calls} == {__file__}  # the caller, not torch's internals


def test_device_timesteps_are_checked_without_reading_them_back():
    """Per-sample timesteps are validated on their device (torch._assert_async: raises at once on CPU)."""
    s = DDPMDocScheduler()
    x = torch.zeros(SHAPE)
    with pytest.raises(RuntimeError, match=r"timesteps must lie in \[0, 1000\)"):
        s.add_noise(x, x, torch.tensor([5, 1000]))
    with pytest.raises(RuntimeError, match=r"timesteps must lie in \[0, 1000\)"):
        s.add_noise(x, x, torch.tensor([-1, 5]))
    s.set_timesteps(10)
    with pytest.raises(RuntimeError, match="not all in the current schedule of 10 steps"):
        s.step(torch.zeros(SHAPE), torch.tensor([900, 55]), x)
    with pytest.raises(ValueError, match=r"per-sample timesteps must have shape \(2,\)"):
        s.add_noise(x, x, torch.tensor([1, 2, 3]))
