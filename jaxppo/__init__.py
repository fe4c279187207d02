"""jaxppo: JAX-native PPO. A whole training run is one pure, jittable function of a PRNG key.

    import jax, jaxppo
    config = jaxppo.PPOConfig(env="CartPole-v1")
    state, metrics = jax.jit(jaxppo.make_train(config))(jax.random.key(0))
"""

from jaxppo import xla_workarounds

xla_workarounds.apply()  # before anything can start JAX's backend; see the module for why

from jaxppo.advantages import gae  # noqa: E402
from jaxppo.agent import make_policy, make_value_fn  # noqa: E402
from jaxppo.config import HParams, PPOConfig, stack_hparams  # noqa: E402
from jaxppo.evaluate import EvalResult, evaluate, make_evaluate  # noqa: E402
from jaxppo.losses import clipped_surrogate_loss, ppo_loss, value_loss  # noqa: E402
from jaxppo.train import Metrics, TrainState, make_train  # noqa: E402

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
