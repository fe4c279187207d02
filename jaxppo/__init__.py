"""jaxppo: JAX-native PPO. A whole training run is one pure, jittable function of a PRNG key.

    import jax, jaxppo
    config = jaxppo.PPOConfig(env="CartPole-v1")
    state, metrics = jax.jit(jaxppo.make_train(config))(jax.random.key(0))
"""

from jaxppo.advantages import gae
from jaxppo.agent import make_policy, make_value_fn
from jaxppo.config import HParams, PPOConfig, stack_hparams
from jaxppo.evaluate import EvalResult, evaluate, make_evaluate
from jaxppo.losses import clipped_surrogate_loss, ppo_loss, value_loss
from jaxppo.train import Metrics, TrainState, make_train

__version__ = "0.1.0"

__all__ = [
    "EvalResult",
    "HParams",
    "Metrics",
    "PPOConfig",
    "TrainState",
    "clipped_surrogate_loss",
    "evaluate",
    "gae",
    "make_evaluate",
    "make_policy",
    "make_train",
    "make_value_fn",
    "ppo_loss",
    "stack_hparams",
    "value_loss",
]
