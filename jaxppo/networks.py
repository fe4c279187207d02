"""The actor-critic network (flax linen): separate actor and critic, each torso -> [memory core] -> [head layers] ->
head.

Torso: an MLP for vector observations, or a 3x3 convolution then an MLP for HxWxC images (MinAtar). With memory
each branch runs its torso features through its own core (jaxppo.memory), or, with config.memory_shared, one torso
and one core feed both heads (PureJaxRL's ppo_rnn.py shape: half the recurrent arithmetic). The policy head belongs
to the action distribution family (jaxppo.distributions). Every module initialises its own parameters, orthogonal
as customary for PPO: gain sqrt(2) in hidden layers (or LeCun-uniform, config.hidden_init), 0.01 on the policy
head, 1.0 on the value head, zero biases.

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
from jaxppo.distributions import ActionFamily, dense
from jaxppo.memory import make_core, run_cores

_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu, "elu": nn.elu}

Carry = Any
"""Recurrent state of the network: () without memory; (actor carry, critic carry) of the memory cores, or (shared
core's carry,) with memory_shared."""

SQRT2 = math.sqrt(2.0)


def hidden_dense(features: int, hidden_init: str, name: str | None = None) -> nn.Dense:
    """A hidden dense layer, zero bias, its kernel initialised by `hidden_init` (config.hidden_init): orthogonal
    with gain sqrt 2, or LeCun-uniform (variance 1 / fan_in, as the layers of Brax's PPO networks)."""
    if hidden_init == "lecun_uniform":
        return nn.Dense(features, kernel_init=nn.initializers.lecun_uniform(), bias_init=nn.initializers.zeros,
                        name=name)
    return dense(features, SQRT2, name=name)


def dense_stack(x: jax.Array, hidden_sizes: tuple[int, ...], activation: str, hidden_init: str) -> jax.Array:
    """Hidden dense layers with `activation`, [..., F] -> [..., hidden_sizes[-1]] ([..., F] for no layers). Call it
    inside a compact module: the layers are that module's own, named Dense_0, Dense_1, ..."""
    act = _ACTIVATIONS[activation]
    for width in hidden_sizes:
        x = act(hidden_dense(width, hidden_init)(x))
    return x


class Torso(nn.Module):
    """Observation encoder: optional CNN (16 3x3 filters, stride 1, VALID, ReLU) then hidden dense layers.

    Input float32 [N, *obs_shape]; output float32 [N, hidden_sizes[-1]]. Kernels by `hidden_init` (orthogonal,
    gain sqrt 2, by default), zero biases.
    """

    hidden_sizes: tuple[int, ...]
    activation: str
    use_cnn: bool
    hidden_init: str = "orthogonal"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs
        if self.use_cnn:
            # A 3x3 VALID convolution written as patch extraction + dense layer (the same function class: a
            # kernel over 3*3*C inputs per output pixel). XLA:CPU ran the gradient of nn.Conv inside lax.scan
            # ~18x slower than outside it (jaxlib 0.10.2); this form runs at matmul speed in and out of scans.
            patches = jax.lax.conv_general_dilated_patches(x, (3, 3), (1, 1), "VALID",
                                                           dimension_numbers=("NHWC", "OIHW", "NHWC"))
            x = nn.relu(hidden_dense(16, self.hidden_init, name="conv")(patches))
        return dense_stack(x.reshape((x.shape[0], -1)), self.hidden_sizes, self.activation, self.hidden_init)


class HeadLayers(nn.Module):
    """The hidden layers of one head, between its branch's features and its output layer (config.head_hidden_sizes):
    float32 [..., F] -> [..., head_hidden_sizes[-1]], any leading axes (time, batch). Kernels by `hidden_init`."""

    hidden_sizes: tuple[int, ...]
    activation: str
    hidden_init: str = "orthogonal"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return dense_stack(x, self.hidden_sizes, self.activation, self.hidden_init)


class ActorCritic(nn.Module):
    """Separate actor and critic networks over time-major sequences (see the module docstring).

    The policy head is the action family's (`family.head()`), so the network's policy output is the
    distribution's parameters; the memory core is `jaxppo.memory.make_core(memory, memory_size)`. With
    `memory_shared` (the config field of that name; memory only) one torso ("torso", actor_hidden_sizes) and one core
    ("core") feed both heads. With `head_hidden_sizes` each head runs its own hidden layers ("actor_head_layers",
    "critic_head_layers") before its output layer: after a shared core, PureJaxRL's ppo_rnn.py shape (one 128-wide
    layer per head).
    """

    obs_rank: int
    family: ActionFamily
    actor_hidden_sizes: tuple[int, ...]
    critic_hidden_sizes: tuple[int, ...]
    activation: str
    use_cnn: bool
    memory: str = "none"
    memory_size: int = 0
    hidden_init: str = "orthogonal"
    memory_shared: bool = False
    head_hidden_sizes: tuple[int, ...] = ()

    def setup(self) -> None:
        if self.memory_shared:
            self.torso = Torso(self.actor_hidden_sizes, self.activation, self.use_cnn, self.hidden_init)
            self.core = make_core(self.memory, self.memory_size)
        else:
            self.actor_torso = Torso(self.actor_hidden_sizes, self.activation, self.use_cnn, self.hidden_init)
            self.critic_torso = Torso(self.critic_hidden_sizes, self.activation, self.use_cnn, self.hidden_init)
            if self.memory != "none":
                self.actor_core = make_core(self.memory, self.memory_size)
                self.critic_core = make_core(self.memory, self.memory_size)
        if self.head_hidden_sizes:
            self.actor_head_layers = HeadLayers(self.head_hidden_sizes, self.activation, self.hidden_init)
            self.critic_head_layers = HeadLayers(self.head_hidden_sizes, self.activation, self.hidden_init)
        self.actor_head = self.family.head()
        self.critic_head = dense(1, 1.0)

    def _policy(self, features: jax.Array) -> Any:
        """The distribution's parameters from the actor branch's features [..., F]."""
        if self.head_hidden_sizes:
            features = self.actor_head_layers(features)
        return self.actor_head(features)

    def _value(self, features: jax.Array) -> jax.Array:
        """float32 [...] values from the critic branch's features [..., F]."""
        if self.head_hidden_sizes:
            features = self.critic_head_layers(features)
        return self.critic_head(features)[..., 0]

    def initial_carry(self, batch_size: int) -> Carry:
        """The carry at the start of an episode for batch_size environments: () without memory, one float32
        [batch_size, memory_size] array per core otherwise."""
        if self.memory == "none":
            return ()
        core = make_core(self.memory, self.memory_size, parent=None)
        return tuple(core.initial_carry((batch_size,)) for _ in range(1 if self.memory_shared else 2))

    def _encode(self, torso: nn.Module, obs: jax.Array) -> jax.Array:
        lead = obs.shape[: obs.ndim - self.obs_rank]
        features = torso(obs.reshape((math.prod(lead),) + obs.shape[len(lead):]))
        return features.reshape(lead + features.shape[-1:])

    def __call__(self, carry: Carry, obs: jax.Array, first: jax.Array) -> tuple[Carry, Any, jax.Array]:
        """Run the network over a sequence.

        Args:
          carry: the carry before step 0 (per branch; () without memory).
          obs: float32 [T, B, *obs_shape] (as the policy sees them: normalised if configured).
          first: bool [T, B]: obs[t] is the first observation of an episode (resets the carry; unused without
            memory).
        Returns:
          (carry after the last step, distribution parameters with leading shape [T, B] (the family's head
          output: logits, or Gaussian (mean, log_std)), values float32 [T, B]).
        """
        if self.memory_shared:
            carry, (features,) = run_cores((self.core,), carry, (self._encode(self.torso, obs),), first)
            return carry, self._policy(features), self._value(features)
        actor, critic = self._encode(self.actor_torso, obs), self._encode(self.critic_torso, obs)
        if self.memory != "none":
            carry, (actor, critic) = run_cores((self.actor_core, self.critic_core), carry, (actor, critic), first)
        return carry, self._policy(actor), self._value(critic)

    def value_from(self, carry: Carry, obs: jax.Array) -> jax.Array:
        """float32 [B] value of obs [B, *obs] continuing from carry, never reset (a truncated step's bootstrap:
        V(final observation, the carry before the auto-reset))."""
        if self.memory_shared:
            torso, core = self.torso, self.core
        else:
            torso, core = self.critic_torso, (self.critic_core if self.memory != "none" else None)
        critic = self._encode(torso, obs)
        if core is not None:
            _, critic = core(carry[-1], critic[None], jnp.zeros((1, obs.shape[0]), bool))  # the critic's carry: last
            critic = critic[0]
        return self._value(critic)


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


def make_network(config: PPOConfig, spec: EnvSpec, family: ActionFamily) -> ActorCritic:
    """The actor-critic module for this config, environment and action family."""
    return ActorCritic(
        obs_rank=len(spec.obs_shape),
        family=family,
        actor_hidden_sizes=tuple(config.actor_sizes),
        critic_hidden_sizes=tuple(config.critic_sizes),
        activation=config.activation,
        use_cnn=uses_cnn(config, spec),
        memory=config.memory,
        memory_size=config.memory_size if config.recurrent else 0,
        hidden_init=config.hidden_init,
        memory_shared=config.memory_shared,
        head_hidden_sizes=tuple(config.head_hidden_sizes),
    )


def init_params(network: ActorCritic, spec: EnvSpec, key: jax.Array):
    """Network parameters from one key (the same key gives the same parameters on every device).

    Every module initialises its own parameters (flax initialisers declared beside each layer). Under `jax.vmap`
    (seeds, sweeps) the keys are initialised one after another, so the QR decompositions of the orthogonal
    initialisers stay unbatched: jaxlib 0.10's batched LAPACK kernels block an XLA:CPU worker thread while
    waiting for work queued on the same pool, which deadlocks a vmapped program (see docs/cpu-lapack-hang.md).
    """

    def init_one(k):
        obs = jnp.zeros((1, 1) + spec.obs_shape, jnp.float32)
        return network.init(k, network.initial_carry(1), obs, jnp.ones((1, 1), bool))

    return jax.custom_batching.sequential_vmap(init_one)(key)


def count_params(network: ActorCritic, spec: EnvSpec) -> int:
    """Number of network parameters (from the parameters' shapes; nothing is initialised)."""
    shapes = jax.eval_shape(lambda k: init_params(network, spec, k), jax.random.key(0))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
