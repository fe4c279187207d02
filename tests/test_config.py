"""PPOConfig validation (errors name the field and value), derived counts, HParams, env lookup."""

from __future__ import annotations

import dataclasses
import uuid

import chex
import gymnax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments.classic_control import CartPole

import jaxppo
from jaxppo.config import HParams, PPOConfig, stack_hparams

# (overrides, substrings the message must contain: the field=value first, then what explains the rule)
INVALID = [
    pytest.param(dict(num_envs=4, num_steps=10, num_minibatches=3), ["num_minibatches=3", "40"], id="minibatches"),
    pytest.param(dict(num_envs=0), ["num_envs=0", "positive integer"], id="zero-envs"),
    pytest.param(dict(num_envs=-2), ["num_envs=-2", "positive integer"], id="negative-envs"),
    pytest.param(dict(num_envs=4.0), ["num_envs=4.0", "positive integer"], id="float-envs"),
    pytest.param(dict(gamma=1.5), ["gamma=1.5", "<= 1.0"], id="gamma"),
    pytest.param(dict(gae_lambda=-0.1), ["gae_lambda=-0.1", ">= 0.0"], id="gae-lambda"),
    pytest.param(dict(clip_eps=0), ["clip_eps=0", "> 0.0"], id="clip-eps"),
    pytest.param(dict(lr=0), ["lr=0", "> 0.0"], id="lr"),
    pytest.param(dict(env="CartPol-v1"), ["env='CartPol-v1'", "CartPole-v1"], id="env-typo"),
    pytest.param(dict(init_log_std=-0.5), ["init_log_std=-0.5", "continuous", "CartPole-v1"], id="log-std-discrete"),
    pytest.param(dict(network="cnn"), ["network='cnn'", "(4,)"], id="cnn-vector-obs"),
    pytest.param(dict(activation="sigmoid"), ["activation='sigmoid'", "tanh"], id="activation"),
    pytest.param(dict(hidden_sizes=()), ["hidden_sizes=()", "non-empty"], id="hidden-sizes"),
    pytest.param(dict(total_timesteps=511), ["total_timesteps=511", "512"], id="less-than-one-batch"),
    pytest.param(dict(num_envs=6, num_devices=4), ["num_envs=6", "num_devices=4"], id="envs-per-device"),
    # 4 envs over 4 devices x 2 steps: per-device batch 1 * 2 = 2, not divisible by 4 (the global 8 is).
    pytest.param(dict(num_envs=4, num_devices=4, num_steps=2, num_minibatches=4),
                 ["num_minibatches=4", "per-device batch", "= 2"], id="per-device-minibatches"),
    pytest.param(dict(parallel="foo"), ["parallel='foo'", "shard_map"], id="parallel"),
]


@pytest.mark.parametrize("overrides, needles", INVALID)
def test_invalid_config_names_field_and_value(overrides, needles):
    with pytest.raises(ValueError) as error:
        PPOConfig(**overrides)
    message = str(error.value)
    assert message.startswith(needles[0]), message
    for needle in needles[1:]:
        assert needle in message, message


def test_close_match_is_suggested_for_an_unknown_env():
    with pytest.raises(ValueError, match=r"did you mean .*CartPole-v1"):
        PPOConfig(env="CartPol-v1")


def test_derived_counts_and_rounding_note():
    config = PPOConfig(total_timesteps=500_000, num_envs=4, num_steps=128, num_minibatches=4)
    # batch = 4 * 128 = 512; minibatch = 512 / 4 = 128; updates = 500000 // 512 = 976; steps = 976 * 512 = 499712
    assert (config.batch_size, config.minibatch_size, config.num_updates, config.num_env_steps) == (
        512, 128, 976, 499_712)
    assert "499712" in config.rounding_note and "976" in config.rounding_note

    exact = PPOConfig(total_timesteps=512 * 3, num_envs=4, num_steps=128)
    assert (exact.num_updates, exact.num_env_steps, exact.rounding_note) == (3, 1536, "")


def test_envs_per_device():
    # 8 envs over 2 devices: 4 each; per-device batch 4 * 16 = 64, divisible by 4 minibatches.
    config = PPOConfig(num_envs=8, num_devices=2, num_steps=16, num_minibatches=4)
    assert (config.envs_per_device, config.batch_size, config.minibatch_size) == (4, 128, 32)


def test_config_is_frozen():
    config = PPOConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_envs = 8  # type: ignore[misc]
    assert config.num_envs == 4


@pytest.mark.parametrize("vf_clip_eps, expected", [(None, 0.3), (0.5, 0.5)])
def test_hparams_from_config(vf_clip_eps, expected):
    config = PPOConfig(lr=1e-3, clip_eps=0.3, vf_clip_eps=vf_clip_eps, ent_coef=0.02, vf_coef=0.25, gamma=0.95,
                       gae_lambda=0.9, max_grad_norm=1.5)
    hp = HParams.from_config(config)
    want = dict(lr=1e-3, clip_eps=0.3, vf_clip_eps=expected, ent_coef=0.02, vf_coef=0.25, gamma=0.95,
                gae_lambda=0.9, max_grad_norm=1.5)
    for name, value in want.items():
        leaf = getattr(hp, name)
        assert leaf.dtype == jnp.float32 and leaf.shape == (), name
        np.testing.assert_allclose(float(leaf), value, rtol=1e-6, err_msg=name)


def test_stack_hparams_adds_a_leading_axis():
    hp_a = HParams.from_config(PPOConfig(lr=1e-3, gamma=0.9))
    hp_b = hp_a.replace(lr=jnp.float32(3e-4), gamma=jnp.float32(0.99))
    stacked = stack_hparams([hp_a, hp_b, hp_a])
    chex.assert_tree_shape_prefix(stacked, (3,))
    chex.assert_trees_all_close(stacked.lr, jnp.array([1e-3, 3e-4, 1e-3], jnp.float32))
    chex.assert_trees_all_close(stacked.gamma, jnp.array([0.9, 0.99, 0.9], jnp.float32))
    chex.assert_trees_all_close(stacked.clip_eps, jnp.full((3,), 0.2, jnp.float32))


def test_custom_env_needs_an_instance():
    config = PPOConfig(env="custom")
    assert config.env == "custom"
    with pytest.raises(ValueError, match="custom"):
        jaxppo.make_train(config)


def test_runtime_registered_env_validates():
    env_id = f"TestCartPole-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError, match=env_id):
        PPOConfig(env=env_id)
    gymnax.register(env_id, lambda **kwargs: CartPole(**kwargs))
    config = PPOConfig(env=env_id, num_envs=2, num_steps=8, num_minibatches=2, total_timesteps=64)
    assert config.env == env_id and config.num_updates == 4
