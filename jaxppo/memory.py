"""Memory cores: recurrent modules whose carry is reset exactly where an episode starts, written for whole
time-major sequences. Every core runs the rollout (T = 1) and the update's replay (T = num_steps) with one code
path, so replay reproduces the rollout.

ResetGRU (memory="gru"): flax's GRUCell equations,

    r = sigmoid(W_ir x + b_ir + W_hr h)
    z = sigmoid(W_iz x + b_iz + W_hz h)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

The input projections of all T steps are one matmul before the time loop; only h @ W_h runs inside it, and the
backward pass is written by hand (`gru_sequence`) so that dL/dW_h is one matmul after the loop.

ResetLRU (memory="lru"): a real-valued gated linear recurrent unit (the RG-LRU of Griffin, De et al. 2024, itself a
gated real form of the LRU of Orvieto et al. 2023, without its separate input gate: the write is scaled by
sqrt(1 - a_t^2), so a gate that holds a memory also stops writing over it) with a nonlinear readout,

    r_t = sigmoid(W_r x_t + b_r)                 recurrence gate
    a_t = sigmoid(L) ** (c * r_t)                per-channel decay in (0, 1), c = 8
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (W_u x_t + b_u)
    y_t = tanh(W_y [h_t, x_t] + b_y)

No gate reads h, so h_t = a_t h_{t-1} + b_t is linear in h and all T steps can be computed by a parallel
associative scan (depth O(log T)) instead of T dependent steps (on accelerators; on a CPU a sequential scan of the
same recurrence is faster, see SCANS); the carry is real-valued float32 [B, H] like the GRU's.

Resets. Before step t the carry is replaced by the initial carry (zeros) where `first[t]` is set, i.e. where the
observation of step t is the first of an episode, so no memory leaks across an episode boundary, in the rollout and
in the update. In the linear scan a reset is a_t = 0: the element (0, b_t) composed after anything gives exactly
(0, b_t), so the scan is exact about resets whatever their position.
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


def _gru_step(w_h: jax.Array, b_hn: jax.Array, h: jax.Array, x_t: jax.Array, first_t: jax.Array):
    """One GRU step from the carry h [B, H] (reset where first_t [B]) with input projections x_t [B, 3H]; returns
    (h', what the backward pass needs: (h0, r, z, n, hn))."""
    h_dim = h.shape[-1]
    h0 = jnp.where(first_t[:, None], 0.0, h)
    h_proj = h0 @ w_h
    r, z = jnp.split(jax.nn.sigmoid(x_t[:, : 2 * h_dim] + h_proj[:, : 2 * h_dim]), 2, axis=-1)
    hn = h_proj[:, 2 * h_dim:] + b_hn
    n = jnp.tanh(x_t[:, 2 * h_dim:] + r * hn)
    return (1.0 - z) * n + z * h0, (h0, r, z, n, hn)


def _gru_forward(w_h, b_hn, carry, x_proj, first):
    def step(h, xs):
        h, saved = _gru_step(w_h, b_hn, h, *xs)
        return h, (h, saved)

    carry, (outputs, saved) = lax.scan(step, carry, (x_proj, first))
    return (carry, outputs), saved


@jax.custom_vjp
def gru_sequence(w_h: jax.Array, b_hn: jax.Array, carry: jax.Array, x_proj: jax.Array,
                 first: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The GRU over T steps: (carry after the last step [B, H], outputs [T, B, H]) from the carry [B, H], the input
    projections x_proj [T, B, 3H] and first bool [T, B].

    Its gradient is written by hand (the same values as autodiff's, up to rounding): the backward loop carries only
    dL/dh and emits each step's dL/d(h0 @ w_h); dL/dw_h is then ONE [H, T*B] x [T*B, 3H] matmul after the loop.
    Autodiff of lax.scan accumulates dL/dw_h inside the loop instead, reading and writing the whole H x 3H
    accumulator at every step, which dominated the GRU update on XLA:CPU (see docs/results.md).
    """
    return _gru_forward(w_h, b_hn, carry, x_proj, first)[0]


def _gru_sequence_fwd(w_h, b_hn, carry, x_proj, first):
    out, saved = _gru_forward(w_h, b_hn, carry, x_proj, first)
    return out, (w_h, saved, first)


def _gru_sequence_bwd(residuals, cotangents):
    w_h, (h0, r, z, n, hn), first = residuals
    d_carry, d_outputs = cotangents

    def step(dh, xs):
        d_out, h0_t, r_t, z_t, n_t, hn_t, first_t = xs
        dh = dh + d_out  # dL/dh_t: from the next step and from the output of this step
        dn = dh * (1.0 - z_t) * (1.0 - n_t * n_t)  # through tanh
        dr = dn * hn_t * r_t * (1.0 - r_t)
        dz = dh * (h0_t - n_t) * z_t * (1.0 - z_t)
        d_proj = jnp.concatenate([dr, dz, dn * r_t], axis=-1)  # dL/d(h0 @ w_h + [0, 0, b_hn])
        dh0 = dh * z_t + d_proj @ w_h.T
        return jnp.where(first_t[:, None], 0.0, dh0), (d_proj, jnp.concatenate([dr, dz, dn], axis=-1))

    d_carry, (d_proj, d_x) = lax.scan(step, d_carry, (d_outputs, h0, r, z, n, hn, first), reverse=True)
    h_dim = h0.shape[-1]
    d_w = jnp.einsum("tbi,tbj->ij", h0, d_proj)
    d_b = jnp.sum(d_proj[..., 2 * h_dim:], axis=(0, 1))
    return d_w, d_b, d_carry, d_x, None


gru_sequence.defvjp(_gru_sequence_fwd, _gru_sequence_bwd)


class MemoryCore(nn.Module):
    """What every core shares: a real-valued carry of `features` [B, H] that is zeros at an episode start.

    A core is called as core(carry, inputs, first) -> (carry, outputs) with
      carry: float32 [B, H] carry before step 0;
      inputs: float32 [T, B, F] features;
      first: bool [T, B]: step t starts an episode (the carry is reset before it);
    and returns (carry after step T-1 [B, H], outputs [T, B, H]).
    """

    features: int

    def initial_carry(self, batch_shape: tuple[int, ...]) -> jax.Array:
        """float32 [*batch_shape, H] zeros: the carry at the start of every episode."""
        return jnp.zeros(batch_shape + (self.features,), jnp.float32)


class ResetGRU(MemoryCore):
    """GRU over a time-major sequence with resets. features: carry width H."""

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array, first: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Run the GRU over T steps (arguments and results: MemoryCore)."""
        h_dim = self.features
        x_proj = nn.Dense(3 * h_dim, kernel_init=nn.initializers.lecun_normal(), name="input")(inputs)
        w_h = self.param("recurrent_kernel", _block_orthogonal(3), (h_dim, 3 * h_dim))
        b_hn = self.param("recurrent_bias_n", nn.initializers.zeros, (h_dim,))

        return gru_sequence(w_h, b_hn, carry, x_proj, first)


# ------------------------------------------------------------------------------------------------ linear scan
def _compose(earlier: tuple[jax.Array, jax.Array], later: tuple[jax.Array, jax.Array]):
    """The affine maps h -> a h + b, `earlier` applied first: (a2 a1, a2 b1 + b2). Associative, so
    lax.associative_scan can evaluate every prefix in O(log T) depth. A reset (a2 = 0) makes the result (0, b2)
    exactly: nothing before it survives."""
    a1, b1 = earlier
    a2, b2 = later
    return a2 * a1, a2 * b1 + b2


SCANS = ("auto", "associative", "sequential")
"""How ResetLRU evaluates its recurrence over T steps: a parallel associative scan (depth O(log T), 2x the
multiplies; pays where many cores wait, as on GPU/TPU), a sequential lax.scan (T dependent elementwise steps;
faster on a CPU, where the parallel form's extra passes over [T, B, H] cost more than the dependency), or auto:
sequential on the CPU backend, associative elsewhere. Same recurrence; results agree to float rounding."""


def linear_recurrence(carry: jax.Array, a: jax.Array, b: jax.Array, first: jax.Array,
                      scan: str = "associative") -> jax.Array:
    """h_t = a_t * h_{t-1} + b_t over the leading (time) axis, h_{-1} = carry, h_{t-1} replaced by zeros where
    first[t] is set; by one parallel associative scan or one sequential scan (SCANS; "auto" by backend).

    Args:
      carry: float32 [B, H]; a, b: float32 [T, B, H]; first: bool [T, B]; scan: one of SCANS.
    Returns:
      h: float32 [T, B, H].
    """
    if scan not in SCANS:
        raise ValueError(f"scan={scan!r}: must be one of {', '.join(SCANS)}")
    if scan == "auto":
        scan = "sequential" if jax.default_backend() == "cpu" else "associative"
    a = jnp.where(first[..., None], 0.0, a)
    if scan == "sequential":
        def step(h, a_b):
            h = a_b[0] * h + a_b[1]
            return h, h

        _, h = lax.scan(step, carry, (a, b))
        return h
    b = b.at[0].add(a[0] * carry)  # fold the carry into step 0 (a[0] is 0 where step 0 starts an episode)
    _, h = lax.associative_scan(_compose, (a, b), axis=0)
    return h


def _decay_init(min_rate: float, max_rate: float, power: float):
    """Initialiser of L such that sigmoid(L) ** power is uniform in [min_rate, max_rate]: the slowest decay per
    step (the recurrence gate fully open) spans memories of about 1 / (1 - max_rate) to 1 / (1 - min_rate) steps."""

    def init(key, shape, dtype=jnp.float32):
        rate = jax.random.uniform(key, shape, dtype, min_rate, max_rate) ** (1.0 / power)
        return jnp.log(rate) - jnp.log1p(-rate)  # logit

    return init


class ResetLRU(MemoryCore):
    """Gated real linear recurrent unit over a time-major sequence with resets (see the module docstring).
    features: carry width H (the output has width H too)."""

    gate_power: float = 8.0  # c: a gate r_t = 1 gives the decay sigmoid(L) ** c
    min_rate: float = 0.9  # the initial sigmoid(L) ** c lies in [min_rate, max_rate]
    max_rate: float = 0.999
    scan: str = "auto"  # how the T steps are evaluated: SCANS

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array, first: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Run the unit over T steps (arguments and results: MemoryCore)."""
        h_dim = self.features
        gate, value = jnp.split(nn.Dense(2 * h_dim, kernel_init=nn.initializers.lecun_normal(), name="input")(inputs),
                                2, axis=-1)
        decay = self.param("decay", _decay_init(self.min_rate, self.max_rate, self.gate_power), (h_dim,))
        log_a = -self.gate_power * jax.nn.sigmoid(gate) * jax.nn.softplus(-decay)  # log(sigmoid(L) ** (c r))
        # sqrt(1 - a^2) keeps h on the scale of its input; floored so its gradient stays finite as a -> 1.
        scale = jnp.sqrt(jnp.maximum(-jnp.expm1(2.0 * log_a), 1e-6))
        h = linear_recurrence(carry, jnp.exp(log_a), scale * value, first, self.scan)
        out = jnp.tanh(nn.Dense(h_dim, kernel_init=nn.initializers.lecun_normal(), name="readout")(
            jnp.concatenate([h, inputs], axis=-1)))
        return h[-1], out


CORES = {"gru": ResetGRU, "lru": ResetLRU}
"""Memory cores by PPOConfig.memory name. A core is a flax module built as core(features) with
`initial_carry(batch_shape)` and `__call__(carry, inputs [T, B, F], first bool [T, B]) -> (carry, outputs [T, B, H])`,
resetting its carry before every step whose `first` is set."""


def make_core(name: str, features: int, **module_args) -> nn.Module:
    """The memory core called `name` with carry width `features` (module_args: flax's, e.g. parent=None for a
    free-standing instance whose initial_carry is asked outside a network)."""
    return CORES[name](features, **module_args)
