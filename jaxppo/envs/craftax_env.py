"""Craftax adapter: 'craftax/Craftax-Classic-Symbolic-v1' and the other Craftax ids behind the adapter protocol.

Ids are the names `craftax.craftax_env.make_craftax_env_from_name` accepts (Craftax-Symbolic-v1, Craftax-Pixels-v1,
Craftax-Classic-Symbolic-v1, Craftax-Classic-Pixels-v1). The adapter builds the NoAutoReset variant and resets
itself, the way Craftax's own `EnvironmentAutoReset.step` does (craftax/environment_base/environment_bases.py: the
step key is split into a step key and a reset key, and the reset state replaces the stepped one where done), but
keeps the observation the step reached as `final_obs`. Symbolic observations are float32 vectors, pixel
observations float32 HxWx3 images.

Time limit: Craftax ends an episode through `is_game_over(state, params)` (craftax_classic/game_logic.py,
craftax/game_logic.py), which ORs `state.timestep >= params.max_timesteps` (10,000 steps in Classic, 100,000 in
Craftax) with the real ends (death; lava in Classic; the final boss in Craftax). So `terminated` is the env's own
`is_terminal` with the time limit lifted (`params.replace(max_timesteps=int32 max)`), and `truncated = done and not
terminated`: an episode that dies on its last allowed step is terminated. Craftax has no action masks.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxppo.envs.protocol import EnvSpec, TimeStep, auto_reset, raw_key_data as raw_key, resolve_name

IDS = ("Craftax-Classic-Pixels-v1", "Craftax-Classic-Symbolic-v1", "Craftax-Pixels-v1", "Craftax-Symbolic-v1")
"""The ids craftax.craftax_env.make_craftax_env_from_name accepts (without their -AutoReset aliases)."""

NO_LIMIT = int(np.iinfo(np.int32).max)


def registered_ids() -> list[str]:
    """Craftax's environment ids."""
    return list(IDS)



class CraftaxEnv:
    """A Craftax environment (NoAutoReset variant) and its parameters behind the adapter protocol.

    Args:
      env: a Craftax NoAutoReset environment instance.
      params: its EnvParams; None takes env.default_params.
    """

    def __init__(self, env: Any, params: Any = None):
        self.env = env
        self.params = env.default_params if params is None else params
        self._no_limit = self.params.replace(max_timesteps=NO_LIMIT)
        obs_space = env.observation_space(self.params)
        self.spec = EnvSpec(obs_shape=tuple(int(d) for d in obs_space.shape), continuous=False,
                            num_actions=int(env.action_space(self.params).n), action_shape=(), action_low=None,
                            action_high=None, max_episode_steps=int(self.params.max_timesteps))

    def reset(self, key: jax.Array) -> tuple[Any, jax.Array, None]:
        obs, state = self.env.reset(raw_key(key), self.params)
        return state, jnp.asarray(obs, jnp.float32), None

    def step_reached(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, TimeStep]:
        """The step without the auto-reset (obs = final_obs). A Craftax reset generates a world and costs about 25x
        a step (Craftax-Classic, 64 envs: 71 ms of a 74 ms auto-resetting step), so `step_batch` resets only the
        environments that ended, with `step_reset`."""
        step_key, _ = jax.random.split(raw_key(key))
        final_obs, reached, reward, done, _ = self.env.step(step_key, state, action, self.params)
        done = jnp.asarray(done, bool)
        terminated = jnp.asarray(self.env.is_terminal(reached, self._no_limit), bool)
        final_obs = jnp.asarray(final_obs, jnp.float32)
        return reached, TimeStep(obs=final_obs, action_mask=None,
                                 reward=jnp.asarray(reward, jnp.float32).reshape(()), terminated=terminated,
                                 truncated=done & ~terminated, final_obs=final_obs)

    def step_reset(self, key: jax.Array) -> tuple[Any, jax.Array, None]:
        """The fresh episode a step with this key starts where its episode ended."""
        _, reset_key = jax.random.split(raw_key(key))
        return self.reset(reset_key)

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, TimeStep]:
        reached, timestep = self.step_reached(key, state, action)
        state, obs, _ = auto_reset(timestep.terminated | timestep.truncated, (reached, timestep.obs, None),
                                   self.step_reset(key))
        return state, timestep._replace(obs=obs)


def make(name: str) -> CraftaxEnv:
    """The adapter of a Craftax id with the environment's default parameters."""
    from craftax.craftax_env import make_craftax_env_from_name

    return CraftaxEnv(make_craftax_env_from_name(resolve_name(name, list(IDS), "Craftax"), auto_reset=False))
