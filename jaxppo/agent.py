"""The agent a config describes: its environment adapter, action family and network; how observations reach the
network; THE policy step (observations -> network -> action distribution, `apply_policy` / `policy_step`), which
the rollout, evaluation, the update's replay and `act` all call; and the public `make_policy` / `make_value_fn`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxppo.config import CUSTOM_ENV, PPOConfig
from jaxppo.distributions import ActionFamily, Distribution, make_family
from jaxppo.envs import Env, EnvSpec, make_env
from jaxppo.networks import ActorCritic, Carry, check_network_fits, make_network
from jaxppo.normalizers import Normalizers, normalize_obs


class Agent(NamedTuple):
    """Static description of what is trained: config, environment adapter, its spaces, the action distribution
    family and the network module."""

    config: PPOConfig
    env: Env
    spec: EnvSpec
    family: ActionFamily
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
    family = make_family(config, spec)
    return Agent(config, adapter, spec, family, make_network(config, spec, family))


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


def apply_policy(agent: Agent, params, carry: Carry, obs: jax.Array, first: jax.Array,
                 action_mask: jax.Array | None = None) -> tuple[Carry, Distribution, jax.Array]:
    """THE policy step, on time-major sequences: network -> the family's distribution.

    Args:
      carry: network carry before step 0 ([B, ...] per branch; () without memory).
      obs: float32 [T, B, *obs] as the networks see them (policy_input); first: bool [T, B] (resets the carry).
      action_mask: bool [T, B, A] legal actions, or None.
    Returns:
      (carry after the last step, distribution with batch shape [T, B], values float32 [T, B]).
    """
    carry, dist_params, values = agent.network.apply(params, carry, obs, first)
    return carry, agent.family.create(dist_params, action_mask), values


def policy_step(agent: Agent, params, carry: Carry, obs: jax.Array, first: jax.Array,
                action_mask: jax.Array | None = None) -> tuple[Carry, Distribution, jax.Array]:
    """apply_policy on ONE step of B observations obs [B, *obs], first [B], mask [B, A]: (carry, distribution [B],
    values [B]). Used by the rollout, evaluation, `act` and the feed-forward update (a minibatch of N samples is
    one step of N observations)."""
    mask = None if action_mask is None else action_mask[None]
    carry, dist, values = apply_policy(agent, params, carry, obs[None], first[None], mask)
    return carry, jax.tree.map(lambda x: x[0], dist), values[0]


def initial_carry(agent: Agent, batch_size: int) -> Carry:
    """The network carry at an episode start for batch_size environments (() without memory)."""
    return agent.network.initial_carry(batch_size)


def _forward(agent: Agent, params, obs: jax.Array, normalizers: Normalizers | None, carry: Carry,
             first: jax.Array | None, action_mask: jax.Array | None):
    """(carry, distribution [...], values [...]) for raw obs: any leading axes without memory; one step of a batch
    [B, *obs] with memory (carry None: fresh episodes)."""
    x = policy_input(agent.config, obs, normalizers)
    lead = x.shape[: x.ndim - len(agent.spec.obs_shape)]
    batch = math.prod(lead)
    if agent.config.recurrent:
        if carry is None:
            carry, first = initial_carry(agent, batch), jnp.ones((batch,), bool)
    else:
        carry = ()
    first = jnp.zeros((batch,), bool) if first is None else jnp.asarray(first, bool).reshape(batch)
    mask = None if action_mask is None else jnp.asarray(action_mask).reshape((batch, -1))
    carry, dist, values = policy_step(agent, params, carry, x.reshape((batch,) + agent.spec.obs_shape), first, mask)
    return carry, jax.tree.map(lambda a: a.reshape(lead + a.shape[1:]), dist), values.reshape(lead)


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
        carry, dist, _ = _forward(agent, params, obs, normalizers, carry, first, action_mask)
        action = agent.family.to_env(dist.mode() if key is None else dist.sample(key))
        return (action, carry) if config.recurrent else action

    return act


def make_value_fn(config: PPOConfig, env: Any = None, env_params: Any = None) -> Callable:
    """value(params, obs, normalizers=None, carry=None, first=None) -> float32 [...] predicted state values.

    With memory it takes and returns the carry like `make_policy`'s act: (values [B], carry).
    """
    agent = make_agent(config, env, env_params)

    def value(params, obs: jax.Array, normalizers: Normalizers | None = None, carry: Carry = None,
              first: jax.Array | None = None):
        carry, _, v = _forward(agent, params, obs, normalizers, carry, first, None)
        return (v, carry) if config.recurrent else v

    return value
