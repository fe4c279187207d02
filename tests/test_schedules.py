"""Hyperparameter schedules as data: values against a NumPy reference, anneal_lr's exact numbers, every consumer
reads the scheduled values, and settings with different schedules share one compiled program."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxppo
from jaxppo.config import SCHEDULES, HParams
from jaxppo.losses import ppo_loss
from jaxppo.schedules import effective_hparams, scheduled_value
from tests.helpers import SHORT_RUN


def reference(start, kind, final, warmup, u, n):
    """The schedule written as a plain Python loop body (float64)."""
    p = u / n
    q = min(max((p - warmup) / (1 - warmup), 0.0), 1.0) if warmup > 0 else p
    end = start * final
    value = {"constant": start, "linear": start * (1 - q) + end * q,
             "cosine": end + (start - end) * 0.5 * (1 + math.cos(math.pi * q))}[kind]
    return value * (min(p / warmup, 1.0) if warmup > 0 else 1.0)


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("final, warmup", [(0.0, 0.0), (0.1, 0.0), (0.25, 0.2)])
def test_schedule_values_match_a_plain_reference(kind, final, warmup):
    n = 20
    got = jax.vmap(lambda u: scheduled_value(jnp.float32(3e-4), jnp.float32(SCHEDULES.index(kind)),
                                             jnp.float32(final), jnp.float32(warmup), u, n))(jnp.arange(n))
    expected = [reference(3e-4, kind, final, warmup, u, n) for u in range(n)]
    np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-6, atol=1e-12)


def test_hand_worked_cosine_with_warm_up():
    # N = 10, warm-up 0.2: u = 1 is half-way up (0.5 * 1.0); u = 2 starts the cosine at full value; u = 6 is
    # half-way through the cosine part (q = (0.6 - 0.2) / 0.8 = 0.5): end + (1 - end) / 2 with end = 0.1 -> 0.55.
    hp = HParams.from_config(jaxppo.PPOConfig(lr=1.0, lr_schedule="cosine", lr_final=0.1, lr_warmup=0.2))
    values = [float(effective_hparams(hp, jnp.int32(u), 10).lr) for u in (0, 1, 2, 6)]
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0, 0.55], rtol=1e-6, atol=1e-7)


def test_anneal_lr_keeps_its_exact_numbers():
    # anneal_lr=True (the default, lr_schedule None) must give bit for bit what it always gave: lr * (1 - u / N).
    config = jaxppo.PPOConfig(total_timesteps=512 * 7)
    hp = HParams.from_config(config)
    for u in range(7):
        before = hp.lr * (1.0 - jnp.int32(u).astype(jnp.float32) / config.num_updates)
        assert float(effective_hparams(hp, jnp.int32(u), config.num_updates).lr) == float(before)
    constant = HParams.from_config(jaxppo.PPOConfig(anneal_lr=False))
    assert float(effective_hparams(constant, jnp.int32(5), 7).lr) == float(constant.lr)
    # lr_schedule, when given, wins over anneal_lr.
    assert float(HParams.from_config(jaxppo.PPOConfig(anneal_lr=False, lr_schedule="cosine")).lr_schedule) == 2.0


def _recording_loss(params, batch, hp, config, evaluate):
    """ppo_loss, plus the hyperparameters the loss was handed, as metrics."""
    loss, metrics = ppo_loss(params, batch, hp, config, evaluate)
    return loss, {"ppo": metrics, "seen_lr": hp.lr, "seen_ent_coef": hp.ent_coef, "seen_clip_eps": hp.clip_eps}


def test_every_consumer_reads_the_scheduled_values_and_kinds_share_one_program():
    config = jaxppo.PPOConfig(**{**SHORT_RUN, "total_timesteps": 16 * 16 * 5}, ent_coef_schedule="linear",
                              clip_eps_schedule="cosine", clip_eps_final=0.5)
    train = jax.jit(jax.vmap(jaxppo.make_train(config, loss_fn=_recording_loss), in_axes=(None, 0)))
    base = HParams.from_config(config)
    settings = jaxppo.stack_hparams([base, base.replace(lr_schedule="constant", ent_coef_schedule="cosine",
                                                        ent_coef_warmup=0.4)])
    _, metrics = train(jax.random.key(0), settings)
    n = config.num_updates
    for row, (lr_kind, ent_kind, ent_warmup) in enumerate([("linear", "linear", 0.0), ("constant", "cosine", 0.4)]):
        lr = [reference(2.5e-4, lr_kind, 0.0, 0.0, u, n) for u in range(n)]
        ent = [reference(0.01, ent_kind, 0.0, ent_warmup, u, n) for u in range(n)]
        clip = [reference(0.2, "cosine", 0.5, 0.0, u, n) for u in range(n)]
        for name, expected in (("learning_rate", lr), ("ent_coef", ent), ("clip_eps", clip)):
            np.testing.assert_allclose(np.asarray(getattr(metrics, name))[row], expected, rtol=1e-5, atol=1e-10,
                                       err_msg=name)
        # The loss was handed the very same values (the un-scheduled lr never reaches it).
        np.testing.assert_allclose(metrics.loss["seen_lr"][row], lr, rtol=1e-5, atol=1e-10)
        np.testing.assert_allclose(metrics.loss["seen_ent_coef"][row], ent, rtol=1e-5, atol=1e-10)
        np.testing.assert_allclose(metrics.loss["seen_clip_eps"][row], clip, rtol=1e-5, atol=1e-10)
    assert train._cache_size() == 1


def test_hyperparameters_are_part_of_the_state():
    config = jaxppo.PPOConfig(**SHORT_RUN)
    hp = HParams.from_config(config).replace(lr=1e-3, gamma=0.9)
    state, _ = jax.jit(jaxppo.make_train(config))(jax.random.key(0), hp)
    assert float(state.hparams.lr) == np.float32(1e-3) and float(state.hparams.gamma) == np.float32(0.9)


@pytest.mark.parametrize("field, value, message", [
    ("lr_schedule", "step", "lr_schedule='step': must be one of constant, linear, cosine"),
    ("ent_coef_warmup", 1.0, "ent_coef_warmup=1.0: must be a fraction of the run in \\[0, 1\\)"),
    ("clip_eps_final", -0.5, "clip_eps_final=-0.5: must be >= 0.0"),
])
def test_schedule_fields_are_validated_with_one_line(field, value, message):
    with pytest.raises(ValueError, match=message):
        jaxppo.PPOConfig(**{field: value})
    with pytest.raises(ValueError, match="must be one of"):
        HParams.from_config(jaxppo.PPOConfig()).replace(lr_schedule="exponential")
