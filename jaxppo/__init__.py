"""jaxppo: JAX-native PPO. A whole training run is one pure, jittable function of a PRNG key.

    import jax, jaxppo
    config = jaxppo.PPOConfig(env="CartPole-v1")
    state, metrics = jax.jit(jaxppo.make_train(config))(jax.random.key(0))

Importing jaxppo changes no process state (no flags, no environment variables, no backend start).
"""

from jaxppo.advantages import gae
from jaxppo.agent import make_policy, make_value_fn
from jaxppo.config import HParams, PPOConfig, stack_hparams
from jaxppo.evaluate import EvalResult, evaluate_policy, make_evaluate
from jaxppo.losses import LossInputs, LossMetrics, clipped_surrogate_loss, ppo_loss, value_loss
from jaxppo.render import render  # imported here, not lazily: the function, not the module, is jaxppo.render
from jaxppo.train import Metrics, TrainState, make_train

__version__ = "0.2.0"

__all__ = [
    "EvalResult",
    "HParams",
    "LossInputs",
    "LossMetrics",
    "Metrics",
    "PPOConfig",
    "TrainState",
    "clipped_surrogate_loss",
    "evaluate_policy",
    "gae",
    "load",
    "make_evaluate",
    "make_policy",
    "make_train",
    "make_value_fn",
    "ppo_loss",
    "render",
    "run_pbt",
    "stack_hparams",
    "value_loss",
]


def run_pbt(*args, **kwargs):
    """Population-based training in a run folder: see jaxppo.sweep.run_pbt (and jaxppo.pbt for PBTConfig)."""
    from jaxppo.sweep import run_pbt as run

    return run(*args, **kwargs)


def load(run_dir, seed: int | None = None, env=None, env_params=None, member: int | None = None):
    """A trained run folder as a ready policy: see jaxppo.loading.load_run (config, params, act); seed (or member)
    is the index of a seed of a multi-seed run or a member of a sweep / PBT run (default 0; a PBT run's best)."""
    from jaxppo.loading import load_run

    return load_run(run_dir, seed, env, env_params, member)
