"""Actor-critic networks (flax linen) and the action distributions they output.

The actor and the critic are separate networks (no shared torso): an MLP for vector observations, or a small CNN
followed by an MLP for HxWxC image observations (MinAtar). Orthogonal initialisation as customary for PPO: gain
sqrt(2) in hidden layers, 0.01 on the policy head, 1.0 on the value head, zero biases.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxppo.config import PPOConfig
from jaxppo.envs import EnvSpec

_LOG_2PI = math.log(2.0 * math.pi)


class Categorical(NamedTuple):
    """Categorical distribution over the last axis. logits: float32 [..., A]."""

    logits: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        """int32 [...] actions."""
        return jax.random.categorical(key, self.logits).astype(jnp.int32)

    def log_prob(self, action: jax.Array) -> jax.Array:
        """float32 [...] log pi(action)."""
        log_probs = jax.nn.log_softmax(self.logits)
        return jnp.take_along_axis(log_probs, action[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def entropy(self) -> jax.Array:
        """float32 [...]: -sum_a p(a) log p(a)."""
        log_probs = jax.nn.log_softmax(self.logits)
        return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)

    def mode(self) -> jax.Array:
        """int32 [...] most likely action."""
        return jnp.argmax(self.logits, axis=-1).astype(jnp.int32)


class DiagGaussian(NamedTuple):
    """Diagonal Gaussian over the last axis. mean, log_std: float32 [..., D] (log_std broadcast to mean's shape)."""

    mean: jax.Array
    log_std: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        """float32 [..., D] unclipped actions (clipping to the action space happens at the env boundary only)."""
        return self.mean + jnp.exp(self.log_std) * jax.random.normal(key, self.mean.shape)

    def log_prob(self, action: jax.Array) -> jax.Array:
        """float32 [...]: sum_d -0.5 ((a_d - mu_d) / sigma_d)^2 - log sigma_d - 0.5 log 2 pi."""
        z = (action - self.mean) * jnp.exp(-self.log_std)
        return jnp.sum(-0.5 * jnp.square(z) - self.log_std - 0.5 * _LOG_2PI, axis=-1)

    def entropy(self) -> jax.Array:
        """float32 [...]: sum_d log sigma_d + 0.5 (1 + log 2 pi)."""
        log_std = jnp.broadcast_to(self.log_std, self.mean.shape)
        return jnp.sum(log_std + 0.5 * (1.0 + _LOG_2PI), axis=-1)

    def mode(self) -> jax.Array:
        return self.mean


Distribution = Categorical | DiagGaussian

_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu, "elu": nn.elu}


def _dense(features: int, gain: float) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.orthogonal(gain), bias_init=nn.initializers.zeros)


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
            x = nn.relu(nn.Dense(16, kernel_init=nn.initializers.orthogonal(math.sqrt(2.0)),
                                 bias_init=nn.initializers.zeros, name="conv")(patches))
        x = x.reshape((x.shape[0], -1))
        act = _ACTIVATIONS[self.activation]
        for width in self.hidden_sizes:
            x = act(_dense(width, math.sqrt(2.0))(x))
        return x


class ActorCritic(nn.Module):
    """Separate actor and critic. Observations float32 [..., *obs_shape] with any leading axes."""

    obs_rank: int
    num_outputs: int  # discrete: number of actions; continuous: action dimension
    continuous: bool
    hidden_sizes: tuple[int, ...]
    activation: str
    use_cnn: bool
    init_log_std: float

    def setup(self) -> None:
        self.actor_torso = Torso(self.hidden_sizes, self.activation, self.use_cnn)
        self.actor_head = _dense(self.num_outputs, 0.01)
        self.critic_torso = Torso(self.hidden_sizes, self.activation, self.use_cnn)
        self.critic_head = _dense(1, 1.0)
        if self.continuous:
            self.log_std = self.param("log_std", nn.initializers.constant(self.init_log_std), (self.num_outputs,))

    def _flat(self, obs: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
        lead = obs.shape[: obs.ndim - self.obs_rank]
        return obs.reshape((math.prod(lead),) + obs.shape[len(lead):]), lead

    def policy(self, obs: jax.Array) -> Distribution:
        """Action distribution with batch shape = obs's leading axes."""
        flat, lead = self._flat(obs)
        out = self.actor_head(self.actor_torso(flat)).reshape(lead + (self.num_outputs,))
        if self.continuous:
            return DiagGaussian(out, jnp.broadcast_to(self.log_std, out.shape))
        return Categorical(out)

    def value(self, obs: jax.Array) -> jax.Array:
        """float32 [...] state values for obs's leading axes."""
        flat, lead = self._flat(obs)
        return self.critic_head(self.critic_torso(flat)).reshape(lead)

    def __call__(self, obs: jax.Array) -> tuple[Distribution, jax.Array]:
        return self.policy(obs), self.value(obs)


def uses_cnn(config: PPOConfig, spec: EnvSpec) -> bool:
    """Whether the torso is convolutional: network='cnn', or 'auto' with HxWxC observations."""
    return config.network == "cnn" or (config.network == "auto" and len(spec.obs_shape) == 3)


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
    )


def init_params(network: ActorCritic, spec: EnvSpec, key: jax.Array):
    """Network parameters from one key (the same key gives the same parameters on every device)."""
    return network.init(key, jnp.zeros((1,) + spec.obs_shape, jnp.float32))
