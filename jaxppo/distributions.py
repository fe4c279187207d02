"""Action distributions: categorical (with an optional legal-action mask) and diagonal Gaussian.

Each offers sample, log_prob, entropy and mode with the batch shape of its parameters; `sample_from(noise)` takes
pre-drawn noise, so a rollout can draw all of its randomness before the time loop (`noise_from_bits`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


class Categorical(NamedTuple):
    """Categorical distribution over the last axis.

    logits: float32 [..., A]. mask: bool [..., A] of legal actions, or None (all legal). Illegal actions have
    probability exactly 0 (in sampling, the mode, log_prob, entropy), and no gradient reaches their logits.
    """

    logits: jax.Array
    mask: jax.Array | None = None

    def _log_probs(self) -> jax.Array:
        logits = self.logits
        if self.mask is not None:
            # A finite floor rather than -inf: exp() of it is exactly 0 and no inf - inf = NaN can arise.
            logits = jnp.where(self.mask, logits, jnp.finfo(logits.dtype).min)
        return jax.nn.log_softmax(logits)

    def noise(self, key: jax.Array) -> jax.Array:
        """float32 [..., A] standard Gumbel noise: sample_from(noise(key)) == sample(key)."""
        return jax.random.gumbel(key, self.logits.shape, self.logits.dtype)

    def sample(self, key: jax.Array) -> jax.Array:
        """int32 [...] actions: argmax of logits + Gumbel noise over the legal actions."""
        return self.sample_from(self.noise(key))

    def sample_from(self, noise: jax.Array) -> jax.Array:
        """int32 [...] actions from pre-drawn Gumbel noise [..., A] (the Gumbel-max trick)."""
        return self._argmax(self.logits + noise)

    def log_prob(self, action: jax.Array) -> jax.Array:
        """float32 [...] log pi(action)."""
        return jnp.take_along_axis(self._log_probs(), action[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def entropy(self) -> jax.Array:
        """float32 [...]: -sum over legal a of p(a) log p(a)."""
        log_probs = self._log_probs()
        terms = jnp.exp(log_probs) * log_probs
        if self.mask is not None:
            terms = jnp.where(self.mask, terms, 0.0)
        return -jnp.sum(terms, axis=-1)

    def mode(self) -> jax.Array:
        """int32 [...] most likely legal action."""
        return self._argmax(self.logits)

    def _argmax(self, scores: jax.Array) -> jax.Array:
        if self.mask is not None:
            scores = jnp.where(self.mask, scores, -jnp.inf)
        return jnp.argmax(scores, axis=-1).astype(jnp.int32)


class DiagGaussian(NamedTuple):
    """Diagonal Gaussian over the last axis. mean, log_std: float32 [..., D] (log_std broadcast to mean's shape)."""

    mean: jax.Array
    log_std: jax.Array

    def noise(self, key: jax.Array) -> jax.Array:
        """float32 [..., D] standard normal noise: sample_from(noise(key)) == sample(key)."""
        return jax.random.normal(key, self.mean.shape, self.mean.dtype)

    def sample(self, key: jax.Array) -> jax.Array:
        """float32 [..., D] unclipped actions (clipping to the action space happens at the env boundary only)."""
        return self.sample_from(self.noise(key))

    def sample_from(self, noise: jax.Array) -> jax.Array:
        """float32 [..., D] unclipped actions mean + std * noise from pre-drawn standard normal noise."""
        return self.mean + jnp.exp(self.log_std) * noise

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


def open_unit_interval(bits: jax.Array) -> jax.Array:
    """float32 uniform in the open interval (0, 1) from uint32 random words: the top 23 bits, centred in their
    cell ((k + 0.5) / 2^23), so neither 0 nor 1 can come out."""
    return ((bits >> 9).astype(jnp.float32) + 0.5) * (1.0 / (1 << 23))


def noise_from_bits(continuous: bool, bits: jax.Array) -> jax.Array:
    """Action noise from uint32 random words [..., n]: standard Gumbel (categorical) or standard normal (Gaussian),
    the same transforms as jax.random's, so a rollout can draw every random word it needs in one call."""
    u = open_unit_interval(bits)
    if continuous:
        return jnp.sqrt(2.0) * jax.scipy.special.erfinv(2.0 * u - 1.0)
    return -jnp.log(-jnp.log(u))
