"""The per-timestep tables against an independent float64 computation from the paper's formulas."""

import math

import numpy as np
import pytest

from hf_ddpm.schedules import ChainTables, make_betas, rescale_to_zero_terminal_snr

pytestmark = pytest.mark.numerics  # run again under ATEN_CPU_CAPABILITY=default in CI (.ci/run)


def paper_tables(betas, chain, large_variance):
    """Direct transcription of Eqs. 4, 7, 11, 15 for the chain's own β' (loops, no vectorised tricks), with the fixed
    variance σ² = β' (``large_variance``) or β̃', its first entry the second step's β̃'."""
    alpha_bar_full = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
    out = {name: [] for name in ChainTables.column_names()}
    prev = 1.0
    for t in chain:
        ab = alpha_bar_full[t]
        alpha = ab / prev
        beta = 1.0 - alpha
        out["betas"].append(beta)
        out["alphas"].append(alpha)
        out["alphas_cumprod"].append(ab)
        out["alphas_cumprod_prev"].append(prev)
        out["posterior_variance"].append((1 - prev) / (1 - ab) * beta)
        out["posterior_mean_x0_coef"].append(math.sqrt(prev) * beta / (1 - ab))
        out["posterior_mean_xt_coef"].append(math.sqrt(alpha) * (1 - prev) / (1 - ab))
        out["recip_sqrt_alphas"].append(1 / math.sqrt(alpha))
        out["mean_eps_coef"].append(1 / math.sqrt(alpha) * beta / math.sqrt(1 - ab))
        out["log_betas"].append(math.log(beta))
        out["sqrt_alphas_cumprod"].append(math.sqrt(ab))
        out["sqrt_one_minus_alphas_cumprod"].append(math.sqrt(1 - ab))
        out["sqrt_recip_alphas_cumprod"].append(1 / math.sqrt(ab))
        out["sqrt_recipm1_alphas_cumprod"].append(math.sqrt(1 / ab - 1))
        prev = ab
    pv = out["posterior_variance"]
    out["posterior_log_variance_clipped"] = [math.log(pv[1])] + [math.log(v) for v in pv[1:]]
    out["fixed_variance"] = [pv[1]] + (out["betas"] if large_variance else pv)[1:]
    out["fixed_log_variance"] = [math.log(v) for v in out["fixed_variance"]]
    out["sampling_std"] = [0.0] + [math.sqrt(v) for v in out["fixed_variance"][1:]]
    return out


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
@pytest.mark.parametrize("chain", [None, [0, 9, 250, 600, 999], [3, 4, 5, 700]])
@pytest.mark.parametrize("large_variance", [False, True])
def test_tables_match_the_paper_formulas(schedule, chain, large_variance):
    betas = make_betas(1000, 1e-4, 0.02, schedule)
    chain_list = list(range(1000)) if chain is None else chain
    tables = ChainTables.from_betas(betas, None if chain is None else np.array(chain), large_variance=large_variance)
    expected = paper_tables(betas, chain_list, large_variance)
    for name in ChainTables.column_names():
        np.testing.assert_allclose(getattr(tables, name).numpy(), expected[name], rtol=1e-9, atol=1e-14, err_msg=name)
    assert tables.timesteps.tolist() == chain_list


def test_full_chain_betas_are_the_schedule_itself():
    betas = make_betas(1000, 1e-4, 0.02, "linear")
    np.testing.assert_allclose(ChainTables.from_betas(betas).betas.numpy(), betas, rtol=1e-12)
    np.testing.assert_allclose(betas, np.linspace(1e-4, 0.02, 1000), rtol=1e-15)


def test_cosine_schedule_reproduces_its_alpha_bar():
    T = 1000
    betas = make_betas(T, 0, 0, "squaredcos_cap_v2")
    f = lambda s: math.cos((s / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    alpha_bar = np.cumprod(1 - betas)
    uncapped = betas < 0.999
    expected = np.array([f(t + 1) / f(0) for t in range(T)])
    np.testing.assert_allclose(alpha_bar[uncapped], expected[uncapped], rtol=1e-9)


def test_zero_terminal_snr_rescale():
    betas = make_betas(1000, 1e-4, 0.02, "linear")
    rescaled = rescale_to_zero_terminal_snr(betas)
    alpha_bar = np.cumprod(1 - rescaled)
    assert alpha_bar[-1] == pytest.approx(0.0, abs=1e-20)
    assert alpha_bar[0] == pytest.approx(1 - betas[0], rel=1e-12)
    np.testing.assert_allclose(np.sqrt(alpha_bar[1:-1]) > 0, True)
