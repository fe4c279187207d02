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

ResetLRU (memory="lru"): a real-valued diagonal linear recurrent unit (the LRU of Orvieto et al. 2023 with real
decays: per-channel, learned, time-invariant, the input normalised by sqrt(1 - a^2)) with a nonlinear readout of
the state and the step's input,

    a = sigmoid(L) ** c                          per-channel decay in (0, 1), c = 8
    h_t = a * h_{t-1} + sqrt(1 - a^2) * (W_u x_t + b_u)
    y_t = tanh(W_y [h_t, x_t] + b_y)

Measured against input-dependent decays (Griffin's RG-LRU form, a_t = sigmoid(L) ** (c sigmoid(W_r x_t + b_r)),
this core's previous form) on CartPole-PO and MemoryChain: as good or better with the fixed decay, and 1.2x the
training steps/s (one matmul and the gate's transcendentals less per step); without the readout, or with a linear
one, CartPole-PO is not learned (docs/results.md, section 11). h_t = a_t h_{t-1} + b_t is linear in h, so all T
steps can be computed by a parallel associative scan (depth O(log T)) instead of T dependent steps (on
accelerators; on a CPU a sequential scan of the same recurrence is faster, see SCANS); the carry is real-valued
float32 [B, H] like the GRU's.

Resets. Before step t the carry is replaced by the initial carry (zeros) where `first[t]` is set, i.e. where the
observation of step t is the first of an episode, so no memory leaks across an episode boundary, in the rollout and
in the update. In the linear scan a reset is a_t = 0: the element (0, b_t) composed after anything gives exactly
(0, b_t), so the scan is exact about resets whatever their position.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

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


class _Affine(nn.Module):
    """The kernel [in_width, features] and bias [features] of an affine map, as nn.Dense declares them (same names,
    initialisers and parameter path, so a core's parameters keep nn.Dense's tree and initial values); returned
    instead of applied, so the caller can stack the maps of several cores before applying them."""

    features: int
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, in_width: int) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", self.kernel_init, (in_width, self.features))
        return kernel, self.param("bias", nn.initializers.zeros, (self.features,))


def _affine(x: jax.Array, kernel_bias: tuple[jax.Array, jax.Array]) -> jax.Array:
    kernel, bias = kernel_bias
    return x @ kernel + bias


class MemoryCore(nn.Module):
    """What every core shares: a real-valued carry of `features` [B, H] that is zeros at an episode start.

    A core is called as core(carry, inputs, first) -> (carry, outputs) with
      carry: float32 [B, H] carry before step 0;
      inputs: float32 [T, B, F] features;
      first: bool [T, B]: step t starts an episode (the carry is reset before it);
    and returns (carry after step T-1 [B, H], outputs [T, B, H]).

    A call is two parts, so that `run_cores` can run several cores as one program: `parameters(F)` declares and
    returns the core's parameters (a pytree of arrays), and `sequence()` is the pure function
    (parameters, carry, inputs, first) -> (carry, outputs) that a call evaluates.
    """

    features: int

    def initial_carry(self, batch_shape: tuple[int, ...]) -> jax.Array:
        """float32 [*batch_shape, H] zeros: the carry at the start of every episode."""
        return jnp.zeros(batch_shape + (self.features,), jnp.float32)

    def parameters(self, in_width: int) -> Any:
        raise NotImplementedError

    def sequence(self) -> Callable[..., tuple[jax.Array, jax.Array]]:
        raise NotImplementedError

    def __call__(self, carry: jax.Array, inputs: jax.Array, first: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Run the core over T steps (arguments and results: the class docstring)."""
        return self.sequence()(self.parameters(inputs.shape[-1]), carry, inputs, first)


class ResetGRU(MemoryCore):
    """GRU over a time-major sequence with resets. features: carry width H."""

    @nn.compact
    def parameters(self, in_width: int) -> dict[str, Any]:
        """{"input": (kernel [F, 3H], bias [3H]), "recurrent_kernel": [H, 3H], "recurrent_bias_n": [H]}."""
        h_dim = self.features
        return {"input": _Affine(3 * h_dim, name="input")(in_width),
                "recurrent_kernel": self.param("recurrent_kernel", _block_orthogonal(3), (h_dim, 3 * h_dim)),
                "recurrent_bias_n": self.param("recurrent_bias_n", nn.initializers.zeros, (h_dim,))}

    def sequence(self) -> Callable[..., tuple[jax.Array, jax.Array]]:
        return _gru_apply


def _gru_apply(params, carry: jax.Array, inputs: jax.Array, first: jax.Array) -> tuple[jax.Array, jax.Array]:
    x_proj = _affine(inputs, params["input"])  # all T steps' input projections in one matmul
    return gru_sequence(params["recurrent_kernel"], params["recurrent_bias_n"], carry, x_proj, first)


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
    """Initialiser of L such that sigmoid(L) ** power is uniform in [min_rate, max_rate]: the channels start with
    memories of about 1 / (1 - max_rate) to 1 / (1 - min_rate) steps."""

    def init(key, shape, dtype=jnp.float32):
        rate = jax.random.uniform(key, shape, dtype, min_rate, max_rate) ** (1.0 / power)
        return jnp.log(rate) - jnp.log1p(-rate)  # logit

    return init


class ResetLRU(MemoryCore):
    """Diagonal linear recurrent unit over a time-major sequence with resets (see the module docstring).
    features: carry width H (the output has width H too)."""

    decay_power: float = 8.0  # c: the decay is sigmoid(L) ** c (c scales how fast L's gradient moves the decay)
    min_rate: float = 0.9  # the initial decays lie in [min_rate, max_rate]
    max_rate: float = 0.999
    scan: str = "auto"  # how the T steps are evaluated: SCANS

    @nn.compact
    def parameters(self, in_width: int) -> dict[str, Any]:
        """{"input": (kernel [F, H], bias [H]), "decay": L [H], "readout": (kernel [H + F, H], bias [H])}."""
        h_dim = self.features
        return {"input": _Affine(h_dim, name="input")(in_width),
                "decay": self.param("decay", _decay_init(self.min_rate, self.max_rate, self.decay_power), (h_dim,)),
                "readout": _Affine(h_dim, name="readout")(h_dim + in_width)}

    def sequence(self) -> Callable[..., tuple[jax.Array, jax.Array]]:
        return functools.partial(_lru_apply, decay_power=self.decay_power, scan=self.scan)


def _lru_apply(params, carry: jax.Array, inputs: jax.Array, first: jax.Array, decay_power: float,
               scan: str) -> tuple[jax.Array, jax.Array]:
    log_a = -decay_power * jax.nn.softplus(-params["decay"])  # log(sigmoid(L) ** c), [H]
    # sqrt(1 - a^2) keeps h on the scale of its input; floored so its gradient stays finite as a -> 1.
    scale = jnp.sqrt(jnp.maximum(-jnp.expm1(2.0 * log_a), 1e-6))
    value = _affine(inputs, params["input"])  # [T, B, H]: every step's input projection in one matmul
    h = linear_recurrence(carry, jnp.broadcast_to(jnp.exp(log_a), value.shape), scale * value, first, scan)
    out = jnp.tanh(_affine(jnp.concatenate([h, inputs], axis=-1), params["readout"]))
    return h[-1], out


CORES = {"gru": ResetGRU, "lru": ResetLRU}
"""Memory cores by PPOConfig.memory name. A core is a flax module built as core(features) with
`initial_carry(batch_shape)` and `__call__(carry, inputs [T, B, F], first bool [T, B]) -> (carry, outputs [T, B, H])`,
resetting its carry before every step whose `first` is set."""


def make_core(name: str, features: int, **module_args) -> nn.Module:
    """The memory core called `name` with carry width `features` (module_args: flax's, e.g. parent=None for a
    free-standing instance whose initial_carry is asked outside a network)."""
    return CORES[name](features, **module_args)


def _kind(core: MemoryCore) -> tuple:
    """A core's class and settings: its dataclass fields except its place in the module tree (parent, name)."""
    return (type(core),) + tuple(getattr(core, f.name) for f in dataclasses.fields(core)
                                 if f.name not in ("parent", "name"))


def run_cores(cores: tuple[MemoryCore, ...], carries: tuple[jax.Array, ...], inputs: tuple[jax.Array, ...],
              first: jax.Array) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
    """Several cores over the same T steps (the actor's and the critic's): (carries, outputs), one per core, each
    as core(carry, inputs, first) would return it.

    When the cores are of one kind and their parameters, carries and inputs have equal shapes (the default: actor
    and critic torsos of one width), they run as ONE program vmapped over a leading core axis: every matmul,
    elementwise op and time loop is issued once for all of them instead of once per core (measured end to end on a
    CPU: GRU 1.18x, LRU 1.04-1.12x the training steps/s; on a 2-core AVX-512 Xeon the vmapped GRU pair was 0.85x
    the two run apart: CPU-dependent, docs/results.md section 11). Same arithmetic per core;
    otherwise (e.g. actor and critic of different widths) they run one after another. One core runs as it is.

    Args:
      cores: memory cores; carries: float32 [B, H] each; inputs: float32 [T, B, F] each; first: bool [T, B].
    """
    params = tuple(core.parameters(x.shape[-1]) for core, x in zip(cores, inputs))
    sequences = tuple(core.sequence() for core in cores)
    shapes = [jax.tree.map(jnp.shape, (p, c, x)) for p, c, x in zip(params, carries, inputs)]
    if len(cores) > 1 and all(_kind(core) == _kind(cores[0]) for core in cores[1:]) and all(
            s == shapes[0] for s in shapes[1:]):
        stack = functools.partial(jax.tree.map, lambda *leaves: jnp.stack(leaves))
        carry, out = jax.vmap(sequences[0], in_axes=(0, 0, 0, None))(stack(*params), stack(*carries),
                                                                       stack(*inputs), first)
        return tuple(carry), tuple(out)
    results = [seq(p, c, x, first) for seq, p, c, x in zip(sequences, params, carries, inputs)]
    return tuple(r[0] for r in results), tuple(r[1] for r in results)
