"""openai's ``timestep_respacing`` strings: the kept timesteps equal guided-diffusion's ``space_timesteps``; DDIM's
stride and impossible counts are refused by name."""

import pytest
from guided_diffusion.respace import space_timesteps

from hf_ddpm import DDPMDocScheduler
from hf_ddpm.convert import respaced_timesteps
from hf_ddpm.errors import ParameterError

SPECS = ["", "1", "2", "10", "25", "50", "100", "250", "999", "1000", "4,3,3", "10,15,20", "0,5", "1,0,1", "7,1"]


@pytest.mark.parametrize("T", [1000, 4000, 7, 300])
def test_kept_timesteps_are_space_timesteps(T):
    """Every spec that fits T (single and several sections, zero counts), descending: a chain ``set_timesteps``
    accepts, here and in ``log_likelihood(inference_timesteps=…)``."""
    checked = 0
    for spec in SPECS + [str(K) for K in range(1, min(T, 300) + 1)]:
        try:
            expected = sorted(space_timesteps(T, spec or [T]), reverse=True)
        except ValueError:
            continue
        kept = respaced_timesteps(T, spec)
        assert kept == expected, spec
        DDPMDocScheduler(num_train_timesteps=T).set_timesteps(timesteps=kept)
        checked += 1
    assert checked > 10


@pytest.mark.parametrize("T, spec", [(1000, "ddim50"), (1000, "ddim"), (10, "11"), (10, "3,6"), (1000, "abc"),
                                     (1000, "0"), (1000, "-5")])
def test_refused_by_name(T, spec):
    with pytest.raises(ParameterError) as error:
        respaced_timesteps(T, spec)
    assert error.value.parameter == "timestep_respacing"


def test_openai_refuses_the_same_counts():
    """A section asked more steps than it holds: openai raises too (the refusal is not ours alone)."""
    for T, spec in [(10, "11"), (10, "3,6")]:
        with pytest.raises(ValueError):
            space_timesteps(T, spec)
