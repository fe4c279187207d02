"""Jumanji adapter: any registered id ('jumanji/Snake-v1', 'jumanji/Knapsack-v1') behind the adapter protocol.

Observations: Jumanji observations are NamedTuples of arrays. The `action_mask` field becomes the protocol's action
mask; every other field is flattened (in field order, booleans and integers cast) into one float32 vector.

Actions: a `DiscreteArray` is used as it is. Integer multi-dimensional actions (`MultiDiscreteArray`, or an integer
`BoundedArray`) become one discrete action over their joint space (flat index -> `jnp.unravel_index`), up to
MAX_JOINT_ACTIONS joint actions; their mask is either already joint (shape = num_values, e.g. BinPack, Tetris) or one
row per action dimension (shape [dims, k], e.g. the agents of Cleaner), combined into the joint mask by a logical
AND. A float `BoundedArray` is a continuous action with the spec's bounds.

Episode ends: a step whose `step_type` is LAST ends the episode. Jumanji marks a true end with
`jumanji.types.termination` (discount 0) and a cut-off with `jumanji.types.truncation` (discount 1); so
`terminated = LAST and discount == 0`, `truncated = LAST and discount > 0` (multi-agent discounts are aggregated
with max and rewards with sum, as `jumanji.wrappers.MultiToSingleWrapper` does). Most time-limited tasks (Snake,
Maze, Tetris, ...) end at `env.time_limit` with termination and put `step_count` in the observation, so the limit is
part of their state. Auto-reset is done here with the step key (Jumanji's own AutoResetWrapper draws from the
state's key); `final_obs` is the observation the step reached.

max_episode_steps (evaluation length): `env.time_limit` where the environment has one, else a bound that follows
from the task (Knapsack: num_items, TSP: num_cities, GraphColoring: num_nodes), else None (evaluate then needs
max_steps=...).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxppo.envs.protocol import EnvSpec, TimeStep, auto_reset, raw_key_data as raw_key, resolve_name

MAX_JOINT_ACTIONS = 16_384
"""Largest joint action space a multi-dimensional discrete action is flattened into."""

MASK_FIELD = "action_mask"

_EPISODE_BOUNDS: dict[str, Callable[[Any], int]] = {
    # every step packs / visits / colours one more item, or ends the episode
    "Knapsack": lambda env: env.num_items,
    "TSP": lambda env: env.num_cities,
    "GraphColoring": lambda env: env.num_nodes,
}
"""Environment class name -> upper bound on its episode length, for tasks without a time limit."""


def registered_ids() -> list[str]:
    """Jumanji's registered ids (built in, and added with `jumanji.register`)."""
    import jumanji

    return sorted(jumanji.registered_environments())



def _fields(observation: Any) -> dict[str, Any]:
    """The observation's fields by name, in field order."""
    if hasattr(observation, "_asdict"):
        return dict(observation._asdict())
    if hasattr(observation, "__dataclass_fields__"):
        return {name: getattr(observation, name) for name in observation.__dataclass_fields__}
    return {"observation": observation}


def _episode_limit(env: Any) -> int | None:
    """env.time_limit, else a bound that follows from the task (_EPISODE_BOUNDS), else None."""
    limit = getattr(env, "time_limit", None)
    if isinstance(limit, (int, np.integer)):
        return int(limit)
    bound = _EPISODE_BOUNDS.get(type(env.unwrapped).__name__)
    return int(bound(env.unwrapped)) if bound else None


def _mask_layout(mask_shape: tuple[int, ...] | None, nvec: tuple[int, ...], where: str) -> str:
    """'none', 'joint' (one entry per joint action) or 'per_dimension' (one row per action dimension)."""
    if mask_shape is None:
        return "none"
    if mask_shape == nvec:
        return "joint"
    if len(mask_shape) == 2 and mask_shape[0] == len(nvec) and mask_shape[1] >= max(nvec):
        return "per_dimension"
    raise ValueError(f"{where}: action mask of shape {mask_shape} fits neither the joint action {nvec} nor one row "
                     "per action dimension")


class JumanjiEnv:
    """A Jumanji environment behind the adapter protocol (see the module docstring).

    Args:
      env: a `jumanji.Environment` instance (e.g. `jumanji.make('Snake-v1')` or one built with its own generator).
      name: how messages name it.
    """

    def __init__(self, env: Any, name: str | None = None):
        from jumanji import specs

        self.env = env
        self.name = name or type(env).__name__
        where = f"env='jumanji/{self.name}'"
        _, first = jax.eval_shape(env.reset, jax.random.key_data(jax.random.key(0)))
        fields = _fields(first.observation)
        mask = fields.pop(MASK_FIELD, None)
        mask_shape = None if mask is None else tuple(int(d) for d in mask.shape)
        obs_shape = (sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(fields)),)
        limit = _episode_limit(env)
        action_spec = env.action_spec
        dtype = np.dtype(action_spec.dtype)
        # How a policy action becomes the env's: nvec (sizes of a multi-dimensional integer action, flattened into
        # one joint discrete action) and its minimum; None for a DiscreteArray or a continuous action (as they are).
        self._nvec: tuple[int, ...] | None = None
        self._offset: np.ndarray | None = None
        if np.issubdtype(dtype, np.floating):  # a continuous BoundedArray
            shape = tuple(int(d) for d in action_spec.shape)
            low = np.broadcast_to(np.asarray(action_spec.minimum, np.float32), shape).copy()
            high = np.broadcast_to(np.asarray(action_spec.maximum, np.float32), shape).copy()
            self._mask_layout = "none"
            self.spec = EnvSpec(obs_shape, True, math.prod(shape), shape, low, high, max_episode_steps=limit)
            return
        if isinstance(action_spec, specs.DiscreteArray):
            nvec = (int(action_spec.num_values),)
        else:
            if isinstance(action_spec, specs.MultiDiscreteArray):
                sizes, offset = np.asarray(action_spec.num_values).reshape(-1), np.zeros(math.prod(action_spec.shape))
            else:  # an integer BoundedArray
                low = np.broadcast_to(np.asarray(action_spec.minimum), action_spec.shape).reshape(-1)
                high = np.broadcast_to(np.asarray(action_spec.maximum), action_spec.shape).reshape(-1)
                sizes, offset = high - low + 1, low
            nvec = tuple(int(n) for n in sizes)
            if math.prod(nvec) > MAX_JOINT_ACTIONS:
                raise ValueError(f"{where}: its {len(nvec)}-dimensional action (sizes {list(nvec)}) has "
                                 f"{math.prod(nvec)} joint actions, more than the {MAX_JOINT_ACTIONS} jaxppo "
                                 "flattens into one discrete action")
            self._nvec, self._offset = nvec, np.asarray(offset, dtype)
        self._mask_layout = _mask_layout(mask_shape, nvec, where)
        self.spec = EnvSpec(obs_shape, False, math.prod(nvec), (), None, None, has_action_mask=mask is not None,
                            max_episode_steps=limit)

    # ------------------------------------------------------------------------------------------- conversions
    def _observe(self, observation: Any) -> tuple[jax.Array, jax.Array | None]:
        """Jumanji observation -> (obs float32 [D], mask bool [A] or None)."""
        fields = _fields(observation)
        mask = fields.pop(MASK_FIELD, None)
        # Field by field in declaration order (jax.tree.leaves of the dict would sort the names).
        leaves = [jnp.asarray(leaf).astype(jnp.float32).reshape(-1)
                  for value in fields.values() for leaf in jax.tree.leaves(value)]
        obs = jnp.concatenate(leaves) if leaves else jnp.zeros((0,), jnp.float32)
        if self._mask_layout == "none":
            return obs, None
        mask = jnp.asarray(mask, bool)
        if self._mask_layout == "per_dimension":
            joint = mask[0, : self._nvec[0]]
            for dim in range(1, len(self._nvec)):
                joint = joint[..., None] & mask[dim, : self._nvec[dim]]
            mask = joint
        return obs, mask.reshape(self.spec.num_actions)

    def _env_action(self, action: jax.Array) -> jax.Array:
        """Policy action (int32 [] or float32 [*shape]) -> the env's action."""
        if self.spec.continuous:
            return action
        if self._nvec is None:
            return action.astype(self.env.action_spec.dtype)
        parts = jnp.stack(jnp.unravel_index(action, self._nvec))
        return (parts + self._offset).astype(self._offset.dtype).reshape(self.env.action_spec.shape)

    # -------------------------------------------------------------------------------------------- protocol
    def reset(self, key: jax.Array) -> tuple[Any, jax.Array, jax.Array | None]:
        state, first = self.env.reset(raw_key(key))
        obs, mask = self._observe(first.observation)
        return state, obs, mask

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, TimeStep]:
        from jumanji.types import StepType

        reached, timestep = self.env.step(state, self._env_action(action))
        last = timestep.step_type == StepType.LAST
        discount = jnp.max(jnp.asarray(timestep.discount))
        terminated = last & (discount == 0)
        final_obs, final_mask = self._observe(timestep.observation)
        state, obs, mask = auto_reset(last, (reached, final_obs, final_mask), self.reset(key))
        return state, TimeStep(
            obs=obs,
            action_mask=mask,
            reward=jnp.sum(jnp.asarray(timestep.reward, jnp.float32)),
            terminated=terminated,
            truncated=last & ~terminated,
            final_obs=final_obs,
        )


def make(name: str) -> JumanjiEnv:
    """The adapter of a registered Jumanji id with its registered settings."""
    import jumanji

    env_id = resolve_name(name, registered_ids(), "jumanji")
    return JumanjiEnv(jumanji.make(env_id), env_id)
