"""Brax adapter: continuous control ('brax/ant', 'brax/halfcheetah@positional') behind the adapter protocol.

An id is a name in brax's registry (`brax.envs.get_environment`), optionally followed by `@backend` to pick the
physics pipeline ('generalized', 'positional', 'spring' or 'mjx'); without one the environment class's own default
is used (brax 0.14: 'generalized' for the MuJoCo-style tasks).

Time limit: the environment is wrapped in brax's own `EpisodeWrapper` (brax/envs/wrappers/training.py), as
`brax.envs.create` and brax's PPO do, with episode_length 1000 and action_repeat 1. That wrapper sets
`state.done = 1` when the step count reaches the limit and records `state.info['truncation'] = 1 - done_by_env`
there; so `truncated = info['truncation'] > 0` and `terminated = done and not truncated` (a terminal state reached
exactly at the limit stays terminated).

Auto-reset is done here, not by brax's `AutoResetWrapper` (which restarts every episode from the first episode's
initial state): where an episode ends, the state is replaced by `env.reset(step key)`, a fresh random start, and
`final_obs` keeps the observation the step reached. Actions are in [-1, 1]^A, the range brax's own agents emit
(tanh-squashed Gaussian); the tasks rescale or clip to their actuators' control ranges themselves.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jaxppo.envs.protocol import EnvSpec, TimeStep, auto_reset, raw_key_data as raw_key, resolve_name

BACKENDS = ("generalized", "positional", "spring", "mjx")
"""Physics pipelines a brax PipelineEnv accepts (brax/envs/base.py)."""

EPISODE_LENGTH = 1000
"""The time limit of `brax.envs.create` and of brax's PPO training (`episode_length`)."""


def _brax_envs():
    """`brax.envs`, imported with mujoco's two 'Failed to import warp' prints (an optional MJX backend) kept off
    stdout, where they would land in the middle of a CLI run's output."""
    with contextlib.redirect_stdout(io.StringIO()):
        from brax import envs
    return envs


@contextlib.contextmanager
def _mujoco_warnings_as_python_warnings() -> Iterator[None]:
    """MuJoCo's compiler warnings (e.g. halfcheetah's deprecated 'settotalmass') as Python warnings, instead of lines
    MuJoCo would append to MUJOCO_LOG.TXT in the working directory."""
    import mujoco

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda message: warnings.warn(f"mujoco: {message}", stacklevel=2))
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def registered_ids() -> list[str]:
    """Environment names in brax's registry (built in, and added with `brax.envs.register_environment`)."""
    return sorted(_brax_envs()._envs)  # brax has no public listing; get_environment reads this dict



class BraxEnv:
    """One brax environment under brax's EpisodeWrapper, behind the adapter protocol (see the module docstring).

    Args:
      name: a name in brax's registry, e.g. 'ant'.
      backend: physics pipeline (see BACKENDS); None keeps the environment's default.
      episode_length: the time limit, in env steps.
      **env_kwargs: passed to the environment class (e.g. reset_noise_scale).
    """

    def __init__(self, name: str, backend: str | None = None, episode_length: int = EPISODE_LENGTH,
                 **env_kwargs: Any):
        envs = _brax_envs()
        from brax.envs.wrappers import training

        if backend is not None:
            env_kwargs["backend"] = backend
        with _mujoco_warnings_as_python_warnings():  # brax compiles the model's MJCF here
            base = envs.get_environment(name, **env_kwargs)
        self.name = name
        # Envs that simulate without a physics pipeline (brax's 'fast' test env) never set one up.
        self.backend = getattr(base, "_backend", None)
        self.env = training.EpisodeWrapper(base, episode_length, action_repeat=1)
        obs = jax.eval_shape(base.reset, jax.random.key_data(jax.random.key(0))).obs
        if not isinstance(obs, jax.ShapeDtypeStruct):
            raise ValueError(f"env='brax/{name}': dictionary observations ({jax.tree.map(lambda x: x.shape, obs)}) are "
                             "not supported; jaxppo needs one array")
        size = int(base.action_size)
        self.spec = EnvSpec(obs_shape=tuple(int(d) for d in obs.shape), continuous=True, num_actions=size,
                            action_shape=(size,), action_low=-np.ones(size, np.float32),
                            action_high=np.ones(size, np.float32), max_episode_steps=int(episode_length))

    def reset(self, key: jax.Array) -> tuple[Any, jax.Array, None]:
        state = self.env.reset(raw_key(key))
        return state, jnp.asarray(state.obs, jnp.float32), None

    def step_reached(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, TimeStep]:
        """The step without the auto-reset (obs = final_obs): a brax reset builds the pipeline's initial state,
        about the cost of a step, so `step_batch` resets only the environments that ended."""
        del key  # brax steps are deterministic; the key is the reset's
        reached = self.env.step(state, action)
        done = reached.done > 0
        truncated = reached.info["truncation"] > 0
        final_obs = jnp.asarray(reached.obs, jnp.float32)
        return reached, TimeStep(obs=final_obs, action_mask=None,
                                 reward=jnp.asarray(reached.reward, jnp.float32).reshape(()),
                                 terminated=done & ~truncated, truncated=truncated, final_obs=final_obs)

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, TimeStep]:
        reached, timestep = self.step_reached(key, state, action)
        state, obs, _ = auto_reset(timestep.terminated | timestep.truncated, (reached, timestep.obs, None),
                                   self.reset(key))
        return state, timestep._replace(obs=obs)


def parse_name(name: str) -> tuple[str, str | None]:
    """('ant', 'positional') for 'ant@positional'; ('ant', None) for 'ant'. KeyError for unknown names/backends."""
    env_name, _, backend = name.partition("@")
    env_name = resolve_name(env_name, registered_ids(), "brax")
    if backend and backend not in BACKENDS:
        raise KeyError(f"unknown brax backend {backend!r}; use one of {', '.join(BACKENDS)} after '@' "
                       f"(e.g. brax/{env_name}@positional), or no '@' for the environment's default")
    return env_name, backend or None


def make(name: str) -> BraxEnv:
    """The adapter of 'NAME' or 'NAME@BACKEND' (brax registry name, optional physics pipeline)."""
    env_name, backend = parse_name(name)
    return BraxEnv(env_name, backend)
