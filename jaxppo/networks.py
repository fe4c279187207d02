"""The actor-critic network (flax linen): separate actor and critic, each torso -> [GRU core] -> head.

Torso: an MLP for vector observations, or a 3x3 convolution then an MLP for HxWxC images (MinAtar). With
memory='gru' each branch runs its torso features through its own `ResetGRU` (jaxppo.memory). Orthogonal
initialisation as customary for PPO: gain sqrt(2) in hidden layers, 0.01 on the policy head, 1.0 on the value
head, zero biases.

Every call is on a time-major sequence: observations [T, B, *obs], `first` [T, B] (the observation starts an
episode) and a carry [B, ...] (an empty tuple without memory). A feed-forward network treats T * B observations
independently, so a minibatch of shuffled samples is simply T=1.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxppo.config import PPOConfig
from jaxppo.envs.protocol import EnvSpec
from jaxppo.memory import ResetGRU

_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu, "elu": nn.elu}

Carry = Any
"""Recurrent state of the network: () without memory; (actor [B, H], critic [B, H]) with a GRU."""


def _dense(features: int, gain: float, name: str | None = None) -> nn.Dense:
    """A dense layer whose kernel init_params makes orthogonal with `gain` (see KERNEL_RULES); the module's own
    initialiser (the same rule) only matters when the module is initialised directly with flax's init."""
    return nn.Dense(features, kernel_init=nn.initializers.orthogonal(gain), bias_init=nn.initializers.zeros,
                    name=name)


class Torso(nn.Module):
    """Observation encoder: optional CNN (16 3x3 filters, stride 1, VALID, ReLU) then hidden dense layers.

    Input float32 [N, *obs_shape]; output float32 [N, hidden_sizes[-1]].
    """

    hidden_sizes: tuple[int, ...]
    activation: str
    use_cnn: bool

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs
        if self.use_cnn:
            # A 3x3 VALID convolution written as patch extraction + dense layer (the same function class: a
            # kernel over 3*3*C inputs per output pixel). XLA:CPU ran the gradient of nn.Conv inside lax.scan
            # ~18x slower than outside it (jaxlib 0.10.2); this form runs at matmul speed in and out of scans.
            patches = jax.lax.conv_general_dilated_patches(x, (3, 3), (1, 1), "VALID",
                                                           dimension_numbers=("NHWC", "OIHW", "NHWC"))
            x = nn.relu(_dense(16, math.sqrt(2.0), name="conv")(patches))
        x = x.reshape((x.shape[0], -1))
        act = _ACTIVATIONS[self.activation]
        for width in self.hidden_sizes:
            x = act(_dense(width, math.sqrt(2.0))(x))
        return x


class ActorCritic(nn.Module):
    """Separate actor and critic networks over time-major sequences (see the module docstring)."""

    obs_rank: int
    num_outputs: int  # discrete: number of actions (logits); continuous: action dimension (Gaussian mean)
    continuous: bool
    hidden_sizes: tuple[int, ...]
    activation: str
    use_cnn: bool
    init_log_std: float
    memory_size: int = 0  # 0: feed-forward

    def setup(self) -> None:
        self.actor_torso = Torso(self.hidden_sizes, self.activation, self.use_cnn)
        self.critic_torso = Torso(self.hidden_sizes, self.activation, self.use_cnn)
        if self.memory_size:
            self.actor_core = ResetGRU(self.memory_size)
            self.critic_core = ResetGRU(self.memory_size)
        self.actor_head = _dense(self.num_outputs, 0.01)
        self.critic_head = _dense(1, 1.0)
        if self.continuous:
            self.log_std = self.param("log_std", nn.initializers.constant(self.init_log_std), (self.num_outputs,))

    def initial_carry(self, batch_size: int) -> Carry:
        """The carry at the start of an episode for batch_size environments (() without memory)."""
        if not self.memory_size:
            return ()
        zeros = jnp.zeros((batch_size, self.memory_size), jnp.float32)
        return (zeros, zeros)

    def _encode(self, torso: nn.Module, obs: jax.Array) -> jax.Array:
        lead = obs.shape[: obs.ndim - self.obs_rank]
        features = torso(obs.reshape((math.prod(lead),) + obs.shape[len(lead):]))
        return features.reshape(lead + features.shape[-1:])

    def __call__(self, carry: Carry, obs: jax.Array, first: jax.Array) -> tuple[Carry, jax.Array, jax.Array]:
        """Run the network over a sequence.

        Args:
          carry: the carry before step 0 ([B, H] per branch; () without memory).
          obs: float32 [T, B, *obs_shape] (as the policy sees them: normalised if configured).
          first: bool [T, B]: obs[t] is the first observation of an episode (resets the carry; unused without
            memory).
        Returns:
          (carry after the last step, policy output float32 [T, B, num_outputs] (logits or Gaussian means),
          values float32 [T, B]).
        """
        actor, critic = self._encode(self.actor_torso, obs), self._encode(self.critic_torso, obs)
        if self.memory_size:
            actor_carry, actor = self.actor_core(carry[0], actor, first)
            critic_carry, critic = self.critic_core(carry[1], critic, first)
            carry = (actor_carry, critic_carry)
        return carry, self.actor_head(actor), self.critic_head(critic)[..., 0]

    def value_from(self, carry: Carry, obs: jax.Array) -> jax.Array:
        """float32 [B] value of obs [B, *obs] continuing from carry, never reset (a truncated step's bootstrap:
        V(final observation, the carry before the auto-reset))."""
        critic = self._encode(self.critic_torso, obs)
        if self.memory_size:
            _, critic = self.critic_core(carry[1], critic[None], jnp.zeros((1, obs.shape[0]), bool))
            critic = critic[0]
        return self.critic_head(critic)[..., 0]

    def policy_log_std(self) -> jax.Array:
        """float32 [D]: the state-independent log-std of the Gaussian policy (continuous actions only)."""
        return self.log_std


def uses_cnn(config: PPOConfig, spec: EnvSpec) -> bool:
    """Whether the torso is convolutional: network='cnn', or 'auto' with HxWxC observations."""
    return config.network == "cnn" or (config.network == "auto" and len(spec.obs_shape) == 3)


def check_network_fits(config: PPOConfig, spec: EnvSpec, env_id: str) -> None:
    """ValueError if a network option does not fit the environment's spaces."""
    if not spec.continuous and config.init_log_std is not None:
        raise ValueError(
            f"init_log_std={config.init_log_std}: only for continuous action spaces, but {env_id} has "
            f"{spec.num_actions} discrete actions; leave it unset"
        )
    if config.network == "cnn" and len(spec.obs_shape) != 3:
        raise ValueError(
            f"network='cnn': needs image observations [H, W, C], but {env_id} observations have shape "
            f"{spec.obs_shape}; use network='mlp' or 'auto'"
        )


def make_network(config: PPOConfig, spec: EnvSpec) -> ActorCritic:
    """The actor-critic module for this config and environment."""
    return ActorCritic(
        obs_rank=len(spec.obs_shape),
        num_outputs=spec.num_actions,
        continuous=spec.continuous,
        hidden_sizes=tuple(config.hidden_sizes),
        activation=config.activation,
        use_cnn=uses_cnn(config, spec),
        init_log_std=0.0 if config.init_log_std is None else float(config.init_log_std),
        memory_size=config.memory_size if config.recurrent else 0,
    )


def _init_one(network: ActorCritic, spec: EnvSpec, key: jax.Array):
    obs = jnp.zeros((1, 1) + spec.obs_shape, jnp.float32)
    return network.init(key, network.initial_carry(1), obs, jnp.ones((1, 1), bool))


SQRT2 = math.sqrt(2.0)


def kernel_rule(path: tuple[str, ...]) -> tuple[str, float]:
    """How init_params fills the parameter at path (names below "params"): (kind, gain) with kind one of
    orthogonal, blocks (side-by-side orthogonal squares, the GRU's recurrent kernel), lecun (normal with variance
    1 / fan_in), zeros, log_std (the configured constant)."""
    name = path[-1]
    if name == "log_std":
        return "log_std", 0.0
    if name in ("bias", "recurrent_bias_n"):
        return "zeros", 0.0
    if path[0] == "actor_head":
        return "orthogonal", 0.01
    if path[0] == "critic_head":
        return "orthogonal", 1.0
    if path[0].endswith("_core"):
        return ("blocks", 1.0) if name == "recurrent_kernel" else ("lecun", 1.0)
    return "orthogonal", SQRT2  # torso layers (dense and the patch convolution)


def _orthogonal(normal: jax.Array, shape: tuple[int, int], gain: float) -> jax.Array:
    """An orthogonal [n, m] matrix with norm-`gain` rows or columns from standard normals [n * m] (QR with the sign
    of R's diagonal, as flax's orthogonal initialiser)."""
    n, m = shape
    q, r = jnp.linalg.qr(normal.reshape(max(n, m), min(n, m)))
    q = q * jnp.sign(jnp.diag(r))
    return gain * (q if n >= m else q.T)


def _draw_params(network: ActorCritic, spec: EnvSpec, key: jax.Array):
    shapes = jax.eval_shape(lambda k: _init_one(network, spec, k), jax.random.key(0))
    leaves, tree = jax.tree_util.tree_flatten_with_path(shapes)
    names = [tuple(str(getattr(k, "key", k)) for k in path)[1:] for path, _ in leaves]
    rules = [kernel_rule(name) for name in names]
    total = sum(math.prod(leaf.shape) for (_, leaf), (kind, _) in zip(leaves, rules)
                if kind in ("orthogonal", "blocks", "lecun"))
    normal = jax.random.normal(key, (max(total, 1),), jnp.float32)  # every random number at once
    values, offset = [], 0
    for (_, leaf), (kind, gain) in zip(leaves, rules):
        size = math.prod(leaf.shape)
        chunk = normal[offset:offset + size]
        if kind == "orthogonal":
            values.append(_orthogonal(chunk, leaf.shape, gain))
        elif kind == "blocks":
            side = leaf.shape[0]
            blocks = chunk.reshape(leaf.shape[1] // side, side * side)
            values.append(jnp.concatenate([_orthogonal(b, (side, side), gain) for b in blocks], axis=1))
        elif kind == "lecun":
            values.append(chunk.reshape(leaf.shape) * jnp.sqrt(1.0 / leaf.shape[0]))
        elif kind == "log_std":
            values.append(jnp.full(leaf.shape, network.init_log_std, leaf.dtype))
        else:
            values.append(jnp.zeros(leaf.shape, leaf.dtype))
        offset += size if kind in ("orthogonal", "blocks", "lecun") else 0
    return jax.tree_util.tree_unflatten(tree, values)


def init_params(network: ActorCritic, spec: EnvSpec, key: jax.Array):
    """Network parameters from one key (the same key gives the same parameters on every device).

    Every random number comes from ONE normal draw, sliced per matrix, then made orthogonal by a QR per matrix
    (kernel_rule says which gain): one random-number kernel instead of one per layer keeps compilation short.
    Under `jax.vmap` (seeds, sweeps) the keys are initialised one after another, so the QR decompositions stay
    unbatched: jaxlib 0.10's batched LAPACK kernels block an XLA:CPU worker thread while waiting for work queued
    on the same pool, which deadlocks a vmapped program (see docs/cpu-lapack-hang.md).
    """
    init = jax.custom_batching.sequential_vmap(lambda k: _draw_params(network, spec, k))
    return init(key)
