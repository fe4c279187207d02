"""The agent a config describes: its environment adapter and network, how observations reach the network, how
network outputs become action distributions and env actions; and the public `make_policy` / `make_value_fn`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxppo.config import CUSTOM_ENV, PPOConfig
from jaxppo.distributions import Categorical, DiagGaussian, Distribution
from jaxppo.envs import Env, EnvSpec, make_env
from jaxppo.networks import ActorCritic, Carry, check_network_fits, make_network
from jaxppo.normalizers import Normalizers, normalize_obs


class Agent(NamedTuple):
    """Static description of what is trained: config, environment adapter, its spaces and the network module."""

    config: PPOConfig
    env: Env
    spec: EnvSpec
    network: ActorCritic


def make_agent(config: PPOConfig, env: Any = None, env_params: Any = None) -> Agent:
    """Resolve the environment (config.env id, or the given instance) and build the network.

    Raises ValueError when the id is unknown, a suite is not installed, or an option does not fit the env.
    """
    if env is None and config.env == CUSTOM_ENV:
        raise ValueError("env='custom': pass the environment instance as make_train(config, env=...)")
    adapter = make_env(config.env, env, env_params)
    spec = adapter.spec
    name = config.env if env is None else getattr(env, "name", type(env).__name__)
    if env is not None and config.env != CUSTOM_ENV:
        _check_instance_matches_id(config.env, env, spec)
    check_network_fits(config, spec, name)
    if config.recurrent and len(spec.obs_shape) == 0:
        raise ValueError(f"memory={config.memory!r}: {name} has scalar observations")
    return Agent(config, adapter, spec, make_network(config, spec))


def _check_instance_matches_id(env_id: str, env: Any, spec: EnvSpec) -> None:
    """ValueError when an environment instance is passed with a config naming another environment."""
    try:
        registered = make_env(env_id)
    except ValueError:
        raise ValueError(f"env={env_id!r} with an environment instance: use env='custom' for instances") from None
    inner = getattr(registered, "env", registered)
    if type(inner) is not type(env) or registered.spec[:4] != spec[:4]:
        raise ValueError(f"env={env_id!r}: the environment instance passed to make_train ({type(env).__name__}) is "
                         f"not a {env_id} ({type(inner).__name__}); use env='custom' for your own instance")


def policy_input(config: PPOConfig, obs: jax.Array, normalizers: Normalizers | None) -> jax.Array:
    """What the networks see: raw float32 obs, or obs normalised with the given statistics."""
    obs = jnp.asarray(obs, jnp.float32)
    if not config.normalize_observations:
        return obs
    if normalizers is None:
        raise ValueError(
            "normalize_observations=True: pass the normaliser statistics, e.g. act(state.params, obs, key, "
            "normalizers=state.normalizers)"
        )
    return normalize_obs(normalizers.obs, obs, config.obs_clip)


def distribution(agent: Agent, params, policy_out: jax.Array, action_mask: jax.Array | None = None) -> Distribution:
    """The action distribution of network outputs [..., A or D] (mask bool [..., A] of legal actions, or None)."""
    if agent.spec.continuous:
        log_std = params["params"]["log_std"]
        return DiagGaussian(policy_out, jnp.broadcast_to(log_std, policy_out.shape))
    return Categorical(policy_out, action_mask)


def env_action(spec: EnvSpec, action: jax.Array) -> jax.Array:
    """Map policy actions [..., D] to the env's action space: reshape and clip continuous ones (the env boundary)."""
    if not spec.continuous:
        return action
    lead = action.shape[:-1]
    return jnp.clip(action.reshape(lead + spec.action_shape), spec.action_low, spec.action_high)


def _single_step(agent: Agent, params, carry: Carry, obs: jax.Array, first: jax.Array | None):
    """Network on one step of B observations [B, *obs] -> (carry, policy_out [B, A], value [B])."""
    batch = obs.shape[0]
    first = jnp.zeros((batch,), bool) if first is None else jnp.asarray(first, bool).reshape(batch)
    carry, out, value = agent.network.apply(params, carry, obs[None], first[None])
    return carry, out[0], value[0]


def _forward(agent: Agent, params, obs: jax.Array, normalizers: Normalizers | None, carry: Carry,
             first: jax.Array | None):
    """(carry, policy output [..., A or D], values [...]) for obs: any leading axes without memory; one step of a
    batch [B, *obs] with memory (carry None: fresh episodes)."""
    x = policy_input(agent.config, obs, normalizers)
    if agent.config.recurrent:
        batch = x.shape[0]
        if carry is None:
            carry, first = initial_carry(agent, batch), jnp.ones((batch,), bool)
        return _single_step(agent, params, carry, x, first)
    lead = x.shape[: x.ndim - len(agent.spec.obs_shape)]
    _, out, v = _single_step(agent, params, (), x.reshape((-1,) + agent.spec.obs_shape), None)
    return (), out.reshape(lead + out.shape[-1:]), v.reshape(lead)


def initial_carry(agent: Agent, batch_size: int) -> Carry:
    """The network carry at an episode start for batch_size environments (() without memory)."""
    return agent.network.initial_carry(batch_size)


def make_policy(config: PPOConfig, env: Any = None, env_params: Any = None) -> Callable:
    """act(params, obs, key=None, normalizers=None, action_mask=None, carry=None, first=None) -> actions.

    Feed-forward policies return env actions for obs [..., *obs_shape]. With memory (config.memory='gru') obs is
    one step of a batch [B, *obs_shape] and the call returns (actions [B, ...], carry): pass the returned carry to
    the next call, `carry=None` (or first=True) at the start of an episode; `first` bool [B] marks the
    environments whose obs starts an episode (their carry is reset before acting).

    key=None acts deterministically (argmax over legal actions / Gaussian mean); a key samples. Continuous actions
    are clipped to the action space, as the environment receives them.
    """
    agent = make_agent(config, env, env_params)

    def act(params, obs: jax.Array, key: jax.Array | None = None, normalizers: Normalizers | None = None,
            action_mask: jax.Array | None = None, carry: Carry = None, first: jax.Array | None = None):
        carry, out, _ = _forward(agent, params, obs, normalizers, carry, first)
        dist = distribution(agent, params, out, action_mask)
        action = env_action(agent.spec, dist.mode() if key is None else dist.sample(key))
        return (action, carry) if config.recurrent else action

    return act


def make_value_fn(config: PPOConfig, env: Any = None, env_params: Any = None) -> Callable:
    """value(params, obs, normalizers=None, carry=None, first=None) -> float32 [...] predicted state values.

    With memory it takes and returns the carry like `make_policy`'s act: (values [B], carry).
    """
    agent = make_agent(config, env, env_params)

    def value(params, obs: jax.Array, normalizers: Normalizers | None = None, carry: Carry = None,
              first: jax.Array | None = None):
        carry, _, v = _forward(agent, params, obs, normalizers, carry, first)
        return (v, carry) if config.recurrent else v

    return value
