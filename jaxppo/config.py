"""Run configuration: the static `PPOConfig` and the traced `HParams`.

`PPOConfig` holds everything that fixes the compiled program (shapes, loop counts, env id, network sizes, flags);
it is frozen and validated on construction, and every derived count is a property. Its numeric hyperparameters
marked `traced` are also carried by `HParams`, a pytree of float32 arrays, so one compiled `train` can be
`jax.vmap`-ed over a batch of them. Each traced hyperparameter is declared once, here, as a `PPOConfig` field.

Counts are global: `num_envs` and `total_timesteps` mean the whole run, on every layout (devices x processes).
Checks that need the environment or the device layout happen when the run is built (`make_train`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxppo.advantages import ADVANTAGE_FORMS

CUSTOM_ENV = "custom"
"""`PPOConfig.env` value for an environment instance handed to `make_train(config, env=..., env_params=...)`."""

ACTIVATIONS = ("tanh", "relu", "gelu", "silu", "elu")
NETWORKS = ("auto", "mlp", "cnn")
HIDDEN_INITS = ("orthogonal", "lecun_uniform")
MEMORIES = ("none", "gru", "lru")
DISTRIBUTIONS = ("auto", "categorical", "gaussian", "tanh_gaussian")
"""Action distributions (jaxppo.distributions.FAMILIES, plus auto: categorical or gaussian by the action space)."""
SCALE_TYPES = ("state_independent", "state_dependent")
SCALE_FNS = ("exp", "softplus")
SCHEDULES = ("constant", "linear", "cosine")
"""Schedule kinds of a scheduled hyperparameter (carried in HParams as their index: traced, vmappable)."""
SCHEDULED = ("lr", "ent_coef", "clip_eps")
"""Hyperparameters with a schedule: fields NAME_schedule, NAME_final, NAME_warmup (see jaxppo.schedules)."""
MAX_UPDATES = 2**31 - 1  # the update counter is int32 on device (JAX's default without x64)
FLOAT32_MAX = float(np.finfo(np.float32).max)

TRACED, LAYOUT, IDENTITY, RESUMABLE = "traced", "layout", "identity", "resumable"
"""The roles a field can play, declared once beside the field (`field(default, *roles)`) and read by config,
outputs, checkpoint, runner and CLI alike (`fields_with(cls, role)`):

- traced: also carried, as a float32 array, by `HParams` (overridable and vmappable without recompiling);
- layout: chooses where a run executes, not what it learns (may differ on resume: elastic resume);
- identity: fixes the shapes of the saved state (a checkpoint is refused when one differs);
- resumable: a run option that may change when a run is resumed (it does not change what is learned).
"""
_ROLES = "jaxppo_roles"


def field(default: Any, *roles: str) -> Any:
    """A dataclass field with its roles (see TRACED, LAYOUT, IDENTITY, RESUMABLE) in its metadata."""
    unknown = set(roles) - {TRACED, LAYOUT, IDENTITY, RESUMABLE}
    if unknown:
        raise ValueError(f"field roles {sorted(unknown)}: must be among traced, layout, identity, resumable")
    return dataclasses.field(default=default, metadata={_ROLES: frozenset(roles)})


def traced(default: float | None) -> Any:
    """A PPOConfig field whose value is also carried, traced, in HParams (sweepable without recompiling)."""
    return field(default, TRACED)


def fields_with(cls: Any, role: str) -> tuple[str, ...]:
    """Names of the dataclass fields of cls (a class or an instance) declared with `role`, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls) if role in f.metadata.get(_ROLES, ()))


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Static settings of one PPO run. Defaults are the usual CartPole settings (PureJaxRL / CleanRL).

    Every field is a plain Python value; changing one means a new compiled program, except for the traced
    hyperparameters (lr, gamma, gae_lambda, clip_eps, vf_clip_eps, ent_coef, vf_coef, max_grad_norm), which
    `HParams.from_config(config)` copies into arrays that can be overridden or vmapped.
    """

    env: str = field("CartPole-v1", IDENTITY)
    """Environment id: a gymnax id ('CartPole-v1'), a suite-prefixed id ('brax/ant', 'jumanji/Snake-v1',
    'craftax/Craftax-Classic-Symbolic-v1'), or 'custom' with an instance passed to make_train."""
    num_envs: int = field(4, IDENTITY)
    """Parallel environments in the whole run (over all devices and processes)."""
    num_steps: int = field(128, IDENTITY)
    """Rollout length T per update, per environment."""
    total_timesteps: int = 500_000
    """Env-step budget of the whole run; rounded down to whole updates of num_envs * num_steps steps."""
    num_epochs: int = 4
    """Passes over each rollout batch."""
    num_minibatches: int = 4
    """Minibatches per epoch (with memory: groups of whole environment sequences)."""
    lr: float = traced(2.5e-4)
    """Adam learning rate (start value when annealed)."""
    anneal_lr: bool = True
    """Linear decay: update u (0-based) of N uses lr * (1 - u / N), constant within an update; the last update
    uses lr / N. Shorthand for lr_schedule='linear' (True) or 'constant' (False) when lr_schedule is None."""
    gamma: float = traced(0.99)
    """Discount factor."""
    gae_lambda: float = traced(0.95)
    """GAE lambda."""
    gae_horizon: int = 0
    """Cut GAE's trace after every gae_horizon steps of the rollout and bootstrap from the critic there (GAE over
    unrolls of that many steps, as Brax's PPO over its unroll_length); 0: over the whole rollout."""
    advantage_form: str = "gae"
    """The policy's advantages: 'gae' (GAE(lambda)) or 'vtrace' (IMPALA's r_t + gamma * G_{t+1} - V(x_t) through
    the next step's lambda-return G, as Brax's PPO computes them; `jaxppo.advantages.gae`). Value targets are the
    lambda-returns either way."""
    recompute_advantages: bool = False
    """Recompute advantages and value targets with the current critic before every epoch (Andrychowicz et al.
    2021, "What matters in on-policy RL"; Brax's PPO does it for every minibatch); False: once per rollout."""
    clip_eps: float = traced(0.2)
    """Policy ratio clip range."""
    clip_value_loss: bool = True
    """Clip the value prediction around the rollout's value (PPO2 style)."""
    vf_clip_eps: float | None = traced(None)
    """Value clip range; None follows clip_eps (also when clip_eps is changed in HParams)."""
    ent_coef: float = traced(0.01)
    """Entropy bonus coefficient."""
    vf_coef: float = traced(0.5)
    """Value loss coefficient."""
    max_grad_norm: float = traced(0.5)
    """Global-norm gradient clip."""
    lr_schedule: str | None = traced(None)
    """Schedule of lr over the run: constant, linear or cosine (see jaxppo.schedules); None follows anneal_lr."""
    lr_final: float = traced(0.0)
    """lr at the end of a linear or cosine schedule, as a fraction of lr."""
    lr_warmup: float = traced(0.0)
    """Fraction of the run's updates over which lr rises linearly from 0 (any schedule), in [0, 1)."""
    ent_coef_schedule: str = traced("constant")
    """Schedule of ent_coef: constant, linear or cosine."""
    ent_coef_final: float = traced(0.0)
    """ent_coef at the end of a linear or cosine schedule, as a fraction of ent_coef."""
    ent_coef_warmup: float = traced(0.0)
    """Fraction of the run's updates over which ent_coef rises linearly from 0."""
    clip_eps_schedule: str = traced("constant")
    """Schedule of clip_eps: constant, linear or cosine."""
    clip_eps_final: float = traced(0.0)
    """clip_eps at the end of a linear or cosine schedule, as a fraction of clip_eps (0 is allowed: the policy
    stops moving at the very end)."""
    clip_eps_warmup: float = traced(0.0)
    """Fraction of the run's updates over which clip_eps rises linearly from 0."""
    adam_eps: float = 1e-5
    """Adam epsilon."""
    normalize_advantages: bool = True
    """Normalise advantages per minibatch (statistics over the whole global minibatch)."""
    normalize_observations: bool = False
    """Running mean/variance observation normaliser; statistics updated once per rollout."""
    normalize_rewards: bool = False
    """Scale rewards by the running std of the discounted return."""
    normalizer_warmup_steps: int = 0
    """Env steps per environment of a random policy, before the first update, whose observations and returns
    seed the normaliser statistics (0: none; only with normalize_observations or normalize_rewards)."""
    obs_clip: float = 10.0
    """Clip range of normalised observations."""
    reward_clip: float = 10.0
    """Clip range of scaled rewards."""
    reward_scale: float = 1.0
    """Fixed factor on the reward the agent learns from (after normalize_rewards when both are on), as Brax's PPO
    `reward_scaling`; episode returns are reported unscaled."""
    hidden_sizes: tuple[int, ...] = field((64, 64), IDENTITY)
    """Hidden layer widths of the actor and of the critic MLP."""
    activation: str = field("tanh", IDENTITY)
    """Hidden activation: tanh, relu, gelu, silu or elu."""
    network: str = field("auto", IDENTITY)
    """Torso: mlp (vector obs), cnn (HxWxC image obs, e.g. MinAtar), or auto (by observation rank)."""
    memory: str = field("none", IDENTITY)
    """Recurrent core after the torso (jaxppo.memory, reset where an episode ended): none (feed-forward), gru, or
    lru (a diagonal linear recurrence with learned per-channel decays, evaluated over a sequence by one scan:
    parallel (associative) on accelerators, sequential on the CPU)."""
    memory_size: int = field(128, IDENTITY)
    """Width of the memory core's carry (memory='gru' or 'lru')."""
    memory_shared: bool = field(False, IDENTITY)
    """With memory: ONE torso and ONE core feed both the policy head and the value head (the shape of PureJaxRL's
    ppo_rnn.py), instead of an actor and a critic each with its own torso and core; half the recurrent arithmetic
    (the core is the update's sequential part), and the value loss (weighted by vf_coef) then also shapes the
    policy's features: with returns of order 100 and heads of one layer it drowns the policy's gradient there; a
    layer of each head's own (head_hidden_sizes, as ppo_rnn.py) or normalize_rewards gives it back (docs/results.md,
    section 11). Needs actor_hidden_sizes == critic_hidden_sizes."""
    sequence_length: int = 0
    """With memory: the update replays sequences of this many steps, each from the carry the rollout had at its
    start (truncated backpropagation through time, as RLlib's max_seq_len or R2D2's stored state: the rollout still
    carries memory across the cuts, gradients stop there); must divide num_steps. 0: whole rollouts."""
    init_log_std: float | None = None
    """Initial log-std of the Gaussian policy (continuous actions only); None means 0.0. Same as init_scale=exp(.)."""
    distribution: str = field("auto", IDENTITY)
    """Action distribution: auto (categorical for discrete actions, gaussian for continuous), categorical, gaussian
    (samples clipped to the bounds at the env) or tanh_gaussian (squashed into the bounds, as brax's PPO)."""
    scale_type: str = field("state_independent", IDENTITY)
    """Gaussian scale: state_independent (a learned parameter per action dimension) or state_dependent (a dense
    layer on the actor's features, as brax's PPO)."""
    scale_fn: str = field("exp", IDENTITY)
    """Gaussian standard deviation from the raw scale: exp or softplus, sigma = fn(raw) + min_scale."""
    min_scale: float = 0.0
    """Floor added to the Gaussian's standard deviation (brax's PPO: 0.001, with softplus)."""
    init_scale: float | None = None
    """Initial standard deviation of the Gaussian (> min_scale); None: exp(init_log_std), 1.0 when that is unset."""
    hidden_init: str = "orthogonal"
    """Kernel initialiser of the hidden layers (the torso's MLP and convolution, actor and critic): orthogonal (gain
    sqrt 2, PPO's customary choice) or lecun_uniform (uniform in +-sqrt(3 / fan_in), as Brax's PPO networks:
    variance 1 / fan_in against the orthogonal layers' 2 / fan_in). Biases start at zero, the heads keep their own
    orthogonal gains (policy_head_gain; 1.0 for the value) and memory cores their own initialisers."""
    policy_head_gain: float = 0.01
    """Orthogonal gain of the policy's output layer (logits; the Gaussian's mean and state-dependent scale): 0.01,
    PPO's customary start near one policy for every state; about 1 for an initial policy that varies by state, as
    Brax's PPO (which initialises that layer like any other)."""
    actor_hidden_sizes: tuple[int, ...] | None = field(None, IDENTITY)
    """Hidden layer widths of the actor MLP; None: hidden_sizes."""
    critic_hidden_sizes: tuple[int, ...] | None = field(None, IDENTITY)
    """Hidden layer widths of the critic MLP; None: hidden_sizes."""
    head_hidden_sizes: tuple[int, ...] = field((), IDENTITY)
    """Hidden layer widths of each head's own MLP, between its branch's features (the torso's, or the memory
    core's output) and its output layer; () (the default): each head is one dense layer. With memory_shared, (128,)
    is PureJaxRL's ppo_rnn.py shape: the policy and the value each get a layer of their own after the shared core."""
    num_devices: int = field(1, LAYOUT)
    """Local devices of each process to spread the environments over."""

    def __post_init__(self) -> None:
        self._normalize_number_types()
        self.validate()

    def _normalize_number_types(self) -> None:
        """Store NumPy scalars (np.float32(0.99), np.int64(4): common in sweeps) as plain Python numbers."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, np.generic):
                continue
            if isinstance(value, numbers.Integral):
                object.__setattr__(self, f.name, int(value))
            elif isinstance(value, numbers.Real):
                object.__setattr__(self, f.name, float(value))
        for name in ("hidden_sizes", "actor_hidden_sizes", "critic_hidden_sizes", "head_hidden_sizes"):
            value = getattr(self, name)
            if isinstance(value, list):
                value = tuple(value)
            if isinstance(value, tuple):
                value = tuple(int(s) if isinstance(s, numbers.Integral) and not isinstance(s, bool) else s
                              for s in value)
                object.__setattr__(self, name, value)

    # ----------------------------------------------------------------------------------------------- derived
    @property
    def batch_size(self) -> int:
        """Env steps per update, over all environments: num_envs * num_steps."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        """Samples per (global) minibatch."""
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """Whole updates that fit into total_timesteps (rounded down)."""
        return self.total_timesteps // self.batch_size

    @property
    def num_env_steps(self) -> int:
        """Env steps actually run: num_updates * batch_size (<= total_timesteps)."""
        return self.num_updates * self.batch_size

    @property
    def actor_sizes(self) -> tuple[int, ...]:
        """Hidden layer widths of the actor in force: actor_hidden_sizes, or hidden_sizes."""
        return self.hidden_sizes if self.actor_hidden_sizes is None else self.actor_hidden_sizes

    @property
    def critic_sizes(self) -> tuple[int, ...]:
        """Hidden layer widths of the critic in force: critic_hidden_sizes, or hidden_sizes."""
        return self.hidden_sizes if self.critic_hidden_sizes is None else self.critic_hidden_sizes

    @property
    def initial_scale(self) -> float:
        """The Gaussian's initial standard deviation: init_scale, or exp(init_log_std) (1.0 when both are unset)."""
        if self.init_scale is not None:
            return float(self.init_scale)
        return math.exp(0.0 if self.init_log_std is None else self.init_log_std)

    @property
    def recurrent(self) -> bool:
        """Whether the policy has memory (minibatches are then whole environment sequences)."""
        return self.memory != "none"

    @property
    def sequences_per_env(self) -> int:
        """Replayed sequences per environment and rollout: num_steps / sequence_length (1 for whole rollouts)."""
        return self.num_steps // self.sequence_length if self.sequence_length else 1

    @property
    def rounding_note(self) -> str:
        """One sentence on how total_timesteps was rounded to whole updates ('' when exact)."""
        if self.num_env_steps == self.total_timesteps:
            return ""
        return (
            f"total_timesteps={self.total_timesteps} is not a multiple of num_envs*num_steps={self.batch_size}: "
            f"running {self.num_updates} updates = {self.num_env_steps} env steps"
        )

    def envs_per_device(self, num_processes: int = 1) -> int:
        """Environments stepped on each device when num_processes processes run num_devices devices each."""
        return self.num_envs // (self.num_devices * num_processes)

    def check_layout(self, num_processes: int = 1) -> None:
        """ValueError naming the layout when num_envs cannot be split evenly over processes x devices, or the
        per-device share cannot be cut into the minibatches."""
        devices = self.num_devices * num_processes
        layout = f"{num_processes} process(es) x {self.num_devices} device(s) = {devices} device(s)"
        if self.num_envs % devices:
            raise ValueError(
                f"num_envs={self.num_envs}: must be divisible by the {layout} (every device steps the same number "
                f"of environments); use a multiple of {devices}"
            )
        per_device = self.num_envs // devices
        if self.recurrent:
            sequences = per_device * self.sequences_per_env
            if sequences % self.num_minibatches and self.sequence_length:
                raise ValueError(
                    f"num_minibatches={self.num_minibatches}: with memory, minibatches are groups of sequences, so "
                    f"it must divide the {sequences} sequences per device ({per_device} environments x "
                    f"num_steps / sequence_length = {self.sequences_per_env}; num_envs={self.num_envs} over {layout})"
                )
            if sequences % self.num_minibatches:
                raise ValueError(
                    f"num_minibatches={self.num_minibatches}: with memory, minibatches are groups of whole "
                    f"environment sequences, so it must divide the {per_device} environments per device "
                    f"(num_envs={self.num_envs} over {layout}); or cut them with sequence_length"
                )
        elif devices == 1 and self.batch_size % self.num_minibatches:
            raise ValueError(
                f"num_minibatches={self.num_minibatches}: must divide num_envs * num_steps = {self.num_envs} * "
                f"{self.num_steps} = {self.batch_size}; pick a divisor of {self.batch_size}"
            )
        elif (per_device * self.num_steps) % self.num_minibatches:
            raise ValueError(
                f"num_minibatches={self.num_minibatches}: must divide the per-device batch num_envs / devices * "
                f"num_steps = {per_device} * {self.num_steps} = {per_device * self.num_steps} ({layout}; each "
                "device holds an equal share of every minibatch)"
            )

    # -------------------------------------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ValueError naming the field, its value and the rule, for the first rule broken.

        Only the config's own fields are checked; the environment and the device layout are checked when the run
        is built.
        """
        for name in ("num_envs", "num_steps", "num_epochs", "num_minibatches", "total_timesteps", "num_devices",
                     "memory_size"):
            _check_positive_int(name, getattr(self, name))
        if not _is_int(self.normalizer_warmup_steps) or self.normalizer_warmup_steps < 0:
            raise ValueError(f"normalizer_warmup_steps={self.normalizer_warmup_steps!r}: must be an integer >= 0")
        if not _is_int(self.gae_horizon) or not 0 <= self.gae_horizon <= self.num_steps:
            raise ValueError(f"gae_horizon={self.gae_horizon!r}: must be an integer in [0, num_steps={self.num_steps}] "
                             "(0: GAE over the whole rollout)")
        if self.advantage_form not in ADVANTAGE_FORMS:
            raise ValueError(f"advantage_form={self.advantage_form!r}: must be one of {', '.join(ADVANTAGE_FORMS)} "
                             "('gae': GAE(lambda), the default; 'vtrace': Brax's PPO's advantages)")
        if not _is_int(self.sequence_length) or self.sequence_length < 0 or (
                self.sequence_length and self.num_steps % self.sequence_length):
            raise ValueError(f"sequence_length={self.sequence_length!r}: must be 0 (whole rollouts) or an integer "
                             f"that divides num_steps={self.num_steps}")
        if self.sequence_length and not self.recurrent:
            raise ValueError(f"sequence_length={self.sequence_length}: only for policies with memory (memory='gru' "
                             "or 'lru'); feed-forward minibatches are shuffled steps, leave it 0")
        for name in ("anneal_lr", "clip_value_loss", "normalize_advantages", "normalize_observations",
                     "normalize_rewards", "recompute_advantages", "memory_shared"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r}: must be True or False")
        for name in ("lr", "clip_eps", "max_grad_norm", "adam_eps", "obs_clip", "reward_clip", "reward_scale"):
            _check_number(name, getattr(self, name), low=0.0, low_inclusive=False)
        for name in ("ent_coef", "vf_coef"):
            _check_number(name, getattr(self, name), low=0.0)
        for name in ("gamma", "gae_lambda"):
            _check_number(name, getattr(self, name), low=0.0, high=1.0)
        for name in SCHEDULED:
            kind = getattr(self, f"{name}_schedule")
            if not (kind is None and name == "lr") and kind not in SCHEDULES:
                raise ValueError(f"{name}_schedule={kind!r}: must be one of {', '.join(SCHEDULES)}")
            _check_number(f"{name}_final", getattr(self, f"{name}_final"), low=0.0)
            warmup = getattr(self, f"{name}_warmup")
            _check_number(f"{name}_warmup", warmup, low=0.0)
            if warmup >= 1.0:
                raise ValueError(f"{name}_warmup={warmup!r}: must be a fraction of the run in [0, 1)")
        if self.vf_clip_eps is not None:
            _check_number("vf_clip_eps", self.vf_clip_eps, low=0.0, low_inclusive=False)
        if self.init_log_std is not None:
            _check_number("init_log_std", self.init_log_std, low=-20.0, high=20.0)
        self._validate_distribution()
        if self.normalizer_warmup_steps and not (self.normalize_observations or self.normalize_rewards):
            raise ValueError(
                f"normalizer_warmup_steps={self.normalizer_warmup_steps}: only with normalize_observations or "
                "normalize_rewards; set it to 0"
            )
        self._validate_counts()
        self._validate_network()
        if not isinstance(self.env, str) or not self.env.strip():
            raise ValueError(f"env={self.env!r}: must be an environment id such as 'CartPole-v1'")

    def _validate_counts(self) -> None:
        if self.total_timesteps < self.batch_size:
            raise ValueError(
                f"total_timesteps={self.total_timesteps}: must be at least one update of num_envs * num_steps = "
                f"{self.batch_size} env steps"
            )
        if self.num_updates > MAX_UPDATES:
            raise ValueError(
                f"total_timesteps={self.total_timesteps}: {self.num_updates} updates of {self.batch_size} steps "
                f"exceed the {MAX_UPDATES} an int32 update counter holds; use more envs or steps per update"
            )
        if self.num_envs % self.num_devices:
            raise ValueError(
                f"num_envs={self.num_envs}: must be divisible by num_devices={self.num_devices} "
                "(every device steps the same number of environments)"
            )
        self.check_layout(num_processes=1)

    def _validate_distribution(self) -> None:
        for name, allowed in (("distribution", DISTRIBUTIONS), ("scale_type", SCALE_TYPES), ("scale_fn", SCALE_FNS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be one of {', '.join(allowed)}")
        _check_number("min_scale", self.min_scale, low=0.0)
        _check_number("policy_head_gain", self.policy_head_gain, low=0.0, low_inclusive=False)
        if self.init_scale is not None:
            _check_number("init_scale", self.init_scale, low=0.0, low_inclusive=False)
            if self.init_log_std is not None:
                raise ValueError(f"init_scale={self.init_scale!r}: give init_scale or init_log_std "
                                 f"(={self.init_log_std!r}), not both")
        if self.min_scale >= self.initial_scale:
            raise ValueError(f"min_scale={self.min_scale!r}: must be below the initial scale {self.initial_scale:.6g} "
                             "(init_scale, or exp(init_log_std))")

    def _validate_network(self) -> None:
        for name in ("hidden_sizes", "actor_hidden_sizes", "critic_hidden_sizes"):
            sizes = getattr(self, name)
            if sizes is None and name != "hidden_sizes":
                continue
            if not isinstance(sizes, tuple) or not sizes or not all(_is_int(s) and s > 0 for s in sizes):
                raise ValueError(f"{name}={sizes!r}: must be a non-empty tuple of positive ints, e.g. (64, 64)")
        sizes = self.head_hidden_sizes
        if not isinstance(sizes, tuple) or not all(_is_int(s) and s > 0 for s in sizes):
            raise ValueError(f"head_hidden_sizes={sizes!r}: must be a tuple of positive ints, e.g. (128,), or () for "
                             "heads of one dense layer")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}: must be one of {', '.join(ACTIVATIONS)}")
        if self.hidden_init not in HIDDEN_INITS:
            raise ValueError(f"hidden_init={self.hidden_init!r}: must be one of {', '.join(HIDDEN_INITS)}")
        if self.network not in NETWORKS:
            raise ValueError(f"network={self.network!r}: must be one of {', '.join(NETWORKS)}")
        if self.memory not in MEMORIES:
            raise ValueError(f"memory={self.memory!r}: must be one of {', '.join(MEMORIES)}")
        if self.memory_shared and not self.recurrent:
            raise ValueError("memory_shared=True: only for policies with memory (memory='gru' or 'lru'); without "
                             "memory the actor and the critic stay separate, leave it False")
        if self.memory_shared and self.actor_sizes != self.critic_sizes:
            raise ValueError(f"memory_shared=True: the actor and the critic share one torso, but "
                             f"actor_hidden_sizes={self.actor_sizes} and critic_hidden_sizes={self.critic_sizes} "
                             "differ; set hidden_sizes only, or memory_shared=False")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive_int(name: str, value: Any) -> None:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{name}={value!r}: must be a positive integer")


def _check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                  low_inclusive: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: must be a finite number")
    if abs(value) > FLOAT32_MAX:
        raise ValueError(f"{name}={value!r}: must fit a float32 (|value| <= {FLOAT32_MAX:.3g})")
    tiny = float(np.finfo(np.float32).tiny)  # below it a float32 is 0 or denormal (flushed to 0 on accelerators)
    if value != 0 and abs(value) < tiny:
        raise ValueError(f"{name}={value!r}: is 0 in float32, where a nonzero value must be at least {tiny:.3g} in "
                         "magnitude")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        rule = f"> {low}" if not low_inclusive else f">= {low}"
        raise ValueError(f"{name}={value!r}: must be {rule}")
    if high is not None and value > high:
        raise ValueError(f"{name}={value!r}: must be <= {high}")


def _check_replaced(name: str, value: Any) -> None:
    """HParams.replace: a concrete value must be finite and fit a float32 (traced values are left alone)."""
    if isinstance(value, (str, type(None))) or isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, (bool, int, float)):
        _check_number(name, value)
        return
    values = np.asarray(value, np.float64)
    if not np.all(np.isfinite(values)) or np.any(np.abs(values) > FLOAT32_MAX):
        raise ValueError(f"{name}={value!r}: must be finite numbers that fit a float32")


def hparam_names() -> tuple[str, ...]:
    """The traced hyperparameters, in declaration order (the PPOConfig fields marked `traced`)."""
    return fields_with(PPOConfig, TRACED)


@jax.tree_util.register_pytree_with_keys_class
class HParams:
    """Traced hyperparameters: one float32 array per `hparam_names()` (scalars, or a leading batch axis).

    `HParams.from_config(config)` takes the config's values; `.replace(lr=...)` overrides some; a batch of
    settings (`stack_hparams([hp_a, hp_b])`) is vmapped with `jax.vmap(train, in_axes=(None, 0))(key, hps)`.
    `vf_clip_eps` is NaN when the config leaves it None: the value clip range then follows clip_eps on every path
    (`value_clip_eps(hp)`), including `hp.replace(clip_eps=...)`.
    """

    __slots__ = ("_values",)

    def __init__(self, **values: Any):
        names = hparam_names()
        missing = set(names) - set(values)
        if missing:
            raise ValueError(f"HParams: missing {sorted(missing)}; the traced hyperparameters are {', '.join(names)}")
        extra = sorted(set(values) - set(names))  # a loss's own coefficients (see from_config)
        object.__setattr__(self, "_values", {name: values[name] for name in names + tuple(extra)})

    @classmethod
    def from_config(cls, config: PPOConfig, extra: dict[str, float] | None = None) -> HParams:
        """The config's traced hyperparameters as float32 scalars (vf_clip_eps None -> NaN: follow clip_eps).

        extra: traced coefficients of a custom loss that are not PPOConfig fields ({name: default}), e.g. a loss
        function's `hyperparameters` attribute (see jaxppo.losses.loss_hyperparameters); they travel, are
        vmapped, checkpointed and explored like the config's own.
        """
        values = {name: getattr(config, name) for name in hparam_names()}
        if values["lr_schedule"] is None:
            values["lr_schedule"] = "linear" if config.anneal_lr else "constant"
        clash = sorted(set(extra or {}) & set(f.name for f in dataclasses.fields(PPOConfig)))
        if clash:
            raise ValueError(f"loss hyperparameters {clash}: already PPOConfig fields; rename them")
        values.update(extra or {})
        return cls(**{name: _as_traced(name, value) for name, value in values.items()})

    def replace(self, **changes: Any) -> HParams:
        """A copy with some values replaced (numbers become float32 arrays); names must already be present."""
        unknown = sorted(set(changes) - set(self._values))
        if unknown:
            raise ValueError(f"HParams.replace: unknown {unknown}; the traced hyperparameters are "
                             f"{', '.join(self._values)}")
        for name, v in changes.items():
            _check_replaced(name, v)
        cast = {name: _as_traced(name, v) if isinstance(v, (int, float, str, type(None))) else v
                for name, v in changes.items()}
        return HParams(**{**self._values, **cast})

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("HParams is immutable; use .replace(...)")

    def __repr__(self) -> str:
        return "HParams(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"

    def tree_flatten_with_keys(self):
        keyed = [(jax.tree_util.GetAttrKey(name), value) for name, value in self._values.items()]
        return keyed, tuple(self._values)

    @classmethod
    def tree_unflatten(cls, names, children) -> HParams:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_values", dict(zip(names, children)))
        return obj


def _as_traced(name: str, value: Any) -> jax.Array:
    """A config value as HParams holds it: float32; None -> NaN (vf_clip_eps follows clip_eps); a schedule kind
    -> its index in SCHEDULES."""
    if name.endswith("_schedule") and isinstance(value, str):
        if value not in SCHEDULES:
            raise ValueError(f"{name}={value!r}: must be one of {', '.join(SCHEDULES)}")
        value = SCHEDULES.index(value)
    return jnp.asarray(np.nan if value is None else value, jnp.float32)


def value_clip_eps(hp: HParams) -> jax.Array:
    """The value clip range in force: vf_clip_eps, or clip_eps where vf_clip_eps is NaN (config value None)."""
    return jnp.where(jnp.isnan(hp.vf_clip_eps), hp.clip_eps, hp.vf_clip_eps)


def stack_hparams(hparams: list[HParams]) -> HParams:
    """Stack settings along a new leading axis, for `jax.vmap` over hyperparameters."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *hparams)
