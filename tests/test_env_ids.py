"""Environment ids are case-insensitive, like suite ids and presets, and a run keeps the registered spelling."""

from __future__ import annotations

import pytest

from jaxppo.cli.flags import ConfigFlags, to_config
from jaxppo.envs import canonical_env_id, make_env, split_env_id


@pytest.mark.parametrize("given, registered", [("CartPole-v1", "CartPole-v1"), ("cartpole-v1", "CartPole-v1"),
                                               ("CARTPOLE-V1", "CartPole-v1"), ("breakout-minatar", "Breakout-MinAtar"),
                                               ("Brax/ant", "brax/ant"), ("JUMANJI/Snake-v1", "jumanji/Snake-v1"),
                                               ("custom", "custom")])
def test_ids_resolve_to_the_registered_spelling(given, registered):
    assert canonical_env_id(given) == registered


def test_a_gymnax_id_in_any_case_builds_that_environment():
    assert make_env("acrobot-V1").spec == make_env("Acrobot-v1").spec
    assert split_env_id("Brax/ant") == ("brax", "ant")
    with pytest.raises(ValueError, match=r"env='cartpol-v1': not a registered gymnax environment; did you mean "
                                         r"CartPole-v1"):
        canonical_env_id("cartpol-v1")


def test_the_command_line_saves_the_registered_spelling():
    # to_config is what `jaxppo train` and `jaxppo sweep` build their PPOConfig with; config.json is written from it.
    assert to_config(ConfigFlags(env="cartpole-v1")).env == "CartPole-v1"


def test_a_suite_prefix_in_any_case_builds_that_suite():
    assert make_env("JAXPPO/CartPole-PO-v1").spec.obs_shape == (2,)  # this project's suite: velocities hidden
