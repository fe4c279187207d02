"""Environments written in this project (suite prefix `jaxppo/`): partially observed tasks that need memory.

    jaxppo/CartPole-PO-v1   CartPole-v1 with the velocities hidden: the observation is [x, theta] only, so the
                            policy has to infer the cart's and pole's velocities from successive observations.
"""

from __future__ import annotations

import difflib

import jax.numpy as jnp

from jaxppo.envs.gymnax_env import GymnaxEnv


def _hidden_velocity_cartpole():
    from gymnax.environments import spaces
    from gymnax.environments.classic_control import CartPole

    class HiddenVelocityCartPole(CartPole):
        """gymnax CartPole-v1 whose observation keeps the positions (x, theta) and drops the velocities."""

        def __init__(self):
            super().__init__()
            self.obs_shape = (2,)

        def get_obs(self, state, params=None, key=None):
            return jnp.array([state.x, state.theta], jnp.float32)

        def observation_space(self, params):
            full = super().observation_space(params)
            return spaces.Box(full.low[jnp.array([0, 2])], full.high[jnp.array([0, 2])], (2,), jnp.float32)

        @property
        def name(self) -> str:
            return "CartPole-PO-v1"

    return HiddenVelocityCartPole()


ENVIRONMENTS = {"CartPole-PO-v1": _hidden_velocity_cartpole}
"""Name after the `jaxppo/` prefix -> factory of the gymnax environment."""


def registered_ids() -> list[str]:
    return [f"jaxppo/{name}" for name in ENVIRONMENTS]


def make(name: str) -> GymnaxEnv:
    """The adapter of a project environment (KeyError naming close matches for an unknown name)."""
    if name not in ENVIRONMENTS:
        close = difflib.get_close_matches(name, list(ENVIRONMENTS), n=3, cutoff=0.4)
        raise KeyError(f"no such jaxppo environment; {'did you mean ' + ', '.join(close) if close else 'known'}: "
                       f"{', '.join(ENVIRONMENTS)}")
    return GymnaxEnv(ENVIRONMENTS[name]())
