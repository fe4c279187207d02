"""Run configuration: the static `PPOConfig` and the traced `HParams`.

`PPOConfig` holds everything that fixes the compiled program (shapes, loop counts, env id, network sizes, flags);
it is frozen and validated on construction, and every derived count is a property. `HParams` holds the numeric
hyperparameters that are traced, so one compiled `train` can be `jax.vmap`-ed over a batch of them.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

CUSTOM_ENV = "custom"
"""`PPOConfig.env` value for an environment instance handed to `make_train(config, env=..., env_params=...)`."""

ACTIVATIONS = ("tanh", "relu", "gelu", "silu", "elu")
NETWORKS = ("auto", "mlp", "cnn")
PARALLEL_MODES = ("shard_map", "pmap")
MAX_ENV_STEPS = 2**31 - 1  # step counters are int32 on device (JAX's default without x64)


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Static settings of one PPO run. Defaults are the usual CartPole settings (PureJaxRL / CleanRL).

    Every field is a plain Python value; changing one means a new compiled program. Numeric hyperparameters that
    should be swept without recompiling are copied into `HParams.from_config(config)` and can be overridden there.
    """

    env: str = "CartPole-v1"
    """gymnax environment id (`gymnax.registered_envs`), or "custom" with an instance passed to make_train."""
    num_envs: int = 4
    """Parallel environments, over all devices of this process."""
    num_steps: int = 128
    """Rollout length T per update, per environment."""
    total_timesteps: int = 500_000
    """Env-step budget; rounded down to whole updates of num_envs * num_steps steps (see `num_env_steps`)."""
    num_epochs: int = 4
    """Passes over each rollout batch."""
    num_minibatches: int = 4
    """Minibatches per epoch."""
    lr: float = 2.5e-4
    """Adam learning rate (start value when annealed)."""
    anneal_lr: bool = True
    """Linear decay: update u (0-based) of N uses lr * (1 - u / N), constant within an update."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_eps: float = 0.2
    """Policy ratio clip range."""
    clip_value_loss: bool = True
    """Clip the value prediction around the rollout's value (PPO2 style)."""
    vf_clip_eps: float | None = None
    """Value clip range; None uses clip_eps."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global-norm gradient clip."""
    adam_eps: float = 1e-5
    """Adam epsilon."""
    normalize_advantages: bool = True
    """Normalise advantages per minibatch (statistics over the whole global minibatch)."""
    normalize_observations: bool = False
    """Running mean/variance observation normaliser; statistics updated once per rollout."""
    normalize_rewards: bool = False
    """Scale rewards by the running std of the discounted return."""
    obs_clip: float = 10.0
    """Clip range of normalised observations."""
    reward_clip: float = 10.0
    """Clip range of scaled rewards."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the actor and of the critic MLP."""
    activation: str = "tanh"
    """Hidden activation: tanh, relu, gelu, silu or elu."""
    network: str = "auto"
    """Torso: mlp (vector obs), cnn (HxWxC image obs, e.g. MinAtar), or auto (by observation rank)."""
    init_log_std: float | None = None
    """Initial log-std of the Gaussian policy (continuous actions only); None means 0.0."""
    num_devices: int = 1
    """Local devices to spread the environments over (multi-device training)."""
    parallel: str = "shard_map"
    """How the per-device update is mapped over devices: shard_map (jax.shard_map in jit) or pmap."""

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
        if isinstance(self.hidden_sizes, (list, tuple)):
            sizes = tuple(int(s) if isinstance(s, numbers.Integral) and not isinstance(s, bool) else s
                          for s in self.hidden_sizes)
            object.__setattr__(self, "hidden_sizes", sizes)

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
    def envs_per_device(self) -> int:
        """Environments stepped on each device."""
        return self.num_envs // self.num_devices

    @property
    def value_clip_eps(self) -> float:
        """The value clip range in force."""
        return self.clip_eps if self.vf_clip_eps is None else self.vf_clip_eps

    @property
    def rounding_note(self) -> str:
        """One sentence on how total_timesteps was rounded to whole updates ('' when exact)."""
        if self.num_env_steps == self.total_timesteps:
            return ""
        return (
            f"total_timesteps={self.total_timesteps} is not a multiple of num_envs*num_steps={self.batch_size}: "
            f"running {self.num_updates} updates = {self.num_env_steps} env steps"
        )

    # -------------------------------------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ValueError naming the field, its value and the rule, for the first rule broken."""
        for name in ("num_envs", "num_steps", "num_epochs", "num_minibatches", "total_timesteps", "num_devices"):
            _check_positive_int(name, getattr(self, name))
        for name in ("anneal_lr", "clip_value_loss", "normalize_advantages", "normalize_observations",
                     "normalize_rewards"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r}: must be True or False")
        for name in ("lr", "clip_eps", "max_grad_norm", "adam_eps", "obs_clip", "reward_clip"):
            _check_number(name, getattr(self, name), low=0.0, low_inclusive=False)
        for name in ("ent_coef", "vf_coef"):
            _check_number(name, getattr(self, name), low=0.0)
        for name in ("gamma", "gae_lambda"):
            _check_number(name, getattr(self, name), low=0.0, high=1.0)
        if self.vf_clip_eps is not None:
            _check_number("vf_clip_eps", self.vf_clip_eps, low=0.0, low_inclusive=False)
        if self.init_log_std is not None:
            _check_number("init_log_std", self.init_log_std)
        self._validate_layout()
        self._validate_network()
        self._validate_env()

    def _validate_layout(self) -> None:
        if self.batch_size % self.num_minibatches:
            raise ValueError(
                f"num_minibatches={self.num_minibatches}: must divide num_envs * num_steps = "
                f"{self.num_envs} * {self.num_steps} = {self.batch_size}; pick a divisor of {self.batch_size}"
            )
        if self.total_timesteps < self.batch_size:
            raise ValueError(
                f"total_timesteps={self.total_timesteps}: must be at least one update of num_envs * num_steps = "
                f"{self.batch_size} env steps"
            )
        if self.total_timesteps > MAX_ENV_STEPS:
            raise ValueError(
                f"total_timesteps={self.total_timesteps}: must be at most {MAX_ENV_STEPS} (int32 step counters); "
                "split longer runs into several resumed runs"
            )
        if self.parallel not in PARALLEL_MODES:
            raise ValueError(f"parallel={self.parallel!r}: must be one of {', '.join(PARALLEL_MODES)}")
        if self.num_envs % self.num_devices:
            raise ValueError(
                f"num_envs={self.num_envs}: must be divisible by num_devices={self.num_devices} "
                "(every device steps the same number of environments)"
            )
        per_device_batch = self.envs_per_device * self.num_steps
        if per_device_batch % self.num_minibatches:
            raise ValueError(
                f"num_minibatches={self.num_minibatches}: must divide the per-device batch "
                f"num_envs / num_devices * num_steps = {self.envs_per_device} * {self.num_steps} = "
                f"{per_device_batch} (each device holds an equal share of every minibatch)"
            )

    def _validate_network(self) -> None:
        sizes = self.hidden_sizes
        if not isinstance(sizes, tuple) or not sizes or not all(_is_int(s) and s > 0 for s in sizes):
            raise ValueError(f"hidden_sizes={sizes!r}: must be a non-empty tuple of positive ints, e.g. (64, 64)")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}: must be one of {', '.join(ACTIVATIONS)}")
        if self.network not in NETWORKS:
            raise ValueError(f"network={self.network!r}: must be one of {', '.join(NETWORKS)}")

    def _validate_env(self) -> None:
        # Imported here: envs.py builds on this module, not the other way round.
        from jaxppo import envs

        if not isinstance(self.env, str) or not self.env:
            raise ValueError(f"env={self.env!r}: must be a gymnax environment id such as 'CartPole-v1'")
        if self.env == CUSTOM_ENV:
            return  # checked against the instance in make_train
        registered = envs.registered_env_ids()
        if self.env not in registered:
            close = difflib.get_close_matches(self.env, registered, n=4, cutoff=0.4)
            hint = f"did you mean {', '.join(close)}?" if close else f"registered: {', '.join(registered)}"
            raise ValueError(
                f"env={self.env!r}: not a registered gymnax environment; {hint} "
                "(register your own with gymnax.register(id, factory), or use env='custom' and pass "
                "env=<instance> to make_train)"
            )
        env, env_params = envs.make_env(self.env)
        check_env_compatible(self, env, env_params)


def check_env_compatible(config: PPOConfig, env: Any, env_params: Any) -> None:
    """Raise ValueError if a config option does not fit the environment's spaces."""
    from jaxppo import envs

    spec = envs.env_spec(env, env_params)
    if not spec.continuous and config.init_log_std is not None:
        raise ValueError(
            f"init_log_std={config.init_log_std}: only for continuous action spaces, but {config.env} has "
            f"{spec.num_actions} discrete actions; leave it unset"
        )
    if config.network == "cnn" and len(spec.obs_shape) != 3:
        raise ValueError(
            f"network='cnn': needs image observations [H, W, C], but {config.env} observations have shape "
            f"{spec.obs_shape}; use network='mlp' or 'auto'"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive_int(name: str, value: Any) -> None:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{name}={value!r}: must be a positive integer")


def _check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                  low_inclusive: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: must be a finite number")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        rule = f"> {low}" if not low_inclusive else f">= {low}"
        raise ValueError(f"{name}={value!r}: must be {rule}")
    if high is not None and value > high:
        raise ValueError(f"{name}={value!r}: must be <= {high}")


@struct.dataclass
class HParams:
    """Traced hyperparameters (float32 scalars, or a leading batch axis when vmapped over settings).

    Defaults come from the config (`HParams.from_config`); override with `.replace(lr=...)`. A batch of settings is
    an HParams whose leaves have a leading axis, e.g. `stack_hparams([hp_a, hp_b])`, for `jax.vmap(train)(keys, hps)`.
    """

    lr: jax.Array
    clip_eps: jax.Array
    vf_clip_eps: jax.Array
    ent_coef: jax.Array
    vf_coef: jax.Array
    gamma: jax.Array
    gae_lambda: jax.Array
    max_grad_norm: jax.Array

    @classmethod
    def from_config(cls, config: PPOConfig) -> HParams:
        """The config's numeric hyperparameters as float32 scalars."""
        values = dict(
            lr=config.lr, clip_eps=config.clip_eps, vf_clip_eps=config.value_clip_eps, ent_coef=config.ent_coef,
            vf_coef=config.vf_coef, gamma=config.gamma, gae_lambda=config.gae_lambda,
            max_grad_norm=config.max_grad_norm,
        )
        return cls(**{name: jnp.asarray(value, jnp.float32) for name, value in values.items()})


def stack_hparams(hparams: list[HParams]) -> HParams:
    """Stack settings along a new leading axis, for `jax.vmap` over hyperparameters."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *hparams)

