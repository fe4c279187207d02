"""A GRU core whose carry is reset exactly where an episode starts, written for whole sequences.

    r = sigmoid(W_ir x + b_ir + W_hr h)
    z = sigmoid(W_iz x + b_iz + W_hz h)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h                                     (flax's GRUCell, the same equations)

The input projections of all T steps are one matmul before the time loop; only h @ W_h runs inside it. Before
step t the carry is replaced by the initial carry (zeros) where `first[t]` is set, i.e. where the observation of
step t is the first of an episode, so no memory leaks across an episode boundary, in the rollout and in the update.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def _block_orthogonal(num_blocks: int):
    """Initialiser of an [H, num_blocks * H] kernel made of num_blocks orthogonal H x H blocks."""
    orthogonal = nn.initializers.orthogonal()

    def init(key, shape, dtype=jnp.float32):
        h = shape[0]
        keys = jax.random.split(key, num_blocks)
        return jnp.concatenate([orthogonal(k, (h, h), dtype) for k in keys], axis=1)

    return init


class ResetGRU(nn.Module):
    """GRU over a time-major sequence with resets. features: carry width H."""

    features: int

    def initial_carry(self, batch_shape: tuple[int, ...]) -> jax.Array:
        """float32 [*batch_shape, H] zeros: the carry at the start of every episode."""
        return jnp.zeros(batch_shape + (self.features,), jnp.float32)

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array, first: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Run the GRU over T steps.

        Args:
          carry: float32 [B, H] carry before step 0.
          inputs: float32 [T, B, F] features.
          first: bool [T, B]: step t starts an episode (the carry is reset before it).
        Returns:
          (carry after step T-1 [B, H], outputs [T, B, H]).
        """
        h_dim = self.features
        x_proj = nn.Dense(3 * h_dim, kernel_init=nn.initializers.lecun_normal(), name="input")(inputs)
        w_h = self.param("recurrent_kernel", _block_orthogonal(3), (h_dim, 3 * h_dim))
        b_hn = self.param("recurrent_bias_n", nn.initializers.zeros, (h_dim,))

        def step(h, xs):
            x_t, first_t = xs
            h = jnp.where(first_t[:, None], 0.0, h)
            rz_x, n_x = x_t[:, : 2 * h_dim], x_t[:, 2 * h_dim:]
            h_proj = h @ w_h
            r, z = jnp.split(jax.nn.sigmoid(rz_x + h_proj[:, : 2 * h_dim]), 2, axis=-1)
            n = jnp.tanh(n_x + r * (h_proj[:, 2 * h_dim:] + b_hn))
            h = (1.0 - z) * n + z * h
            return h, h

        return lax.scan(step, carry, (x_proj, first))
