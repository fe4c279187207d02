"""PPOConfig validation (errors name the field and value), derived counts, HParams; checks made when a run is built
(environment, layout)."""

from __future__ import annotations

import dataclasses
import importlib.util
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
    pytest.param(dict(activation="sigmoid"), ["activation='sigmoid'", "tanh"], id="activation"),
    pytest.param(dict(hidden_sizes=()), ["hidden_sizes=()", "non-empty"], id="hidden-sizes"),
    pytest.param(dict(head_hidden_sizes=(128, 0)), ["head_hidden_sizes=(128, 0)", "positive ints", "()"],
                 id="head-hidden-sizes-zero"),
    pytest.param(dict(head_hidden_sizes=128), ["head_hidden_sizes=128", "tuple"], id="head-hidden-sizes-int"),
    pytest.param(dict(total_timesteps=511), ["total_timesteps=511", "512"], id="less-than-one-batch"),
    pytest.param(dict(num_envs=6, num_devices=4), ["num_envs=6", "num_devices=4"], id="envs-per-device"),
    # 4 envs over 4 devices x 2 steps: per-device batch 1 * 2 = 2, not divisible by 4 (the global 8 is).
    pytest.param(dict(num_envs=4, num_devices=4, num_steps=2, num_minibatches=4),
                 ["num_minibatches=4", "per-device batch", "= 2"], id="per-device-minibatches"),
    pytest.param(dict(memory="lstm"), ["memory='lstm'", "gru"], id="memory"),
    pytest.param(dict(memory="gru", num_envs=4, num_minibatches=8), ["num_minibatches=8", "whole environment",
                                                                     "4 environments per device"], id="memory-mb"),
    pytest.param(dict(lr=1e300), ["lr=1e+300", "float32"], id="lr-overflows-float32"),
    pytest.param(dict(total_timesteps=2**40, num_envs=1, num_steps=1, num_minibatches=1),
                 ["total_timesteps=1099511627776", "int32 update counter"], id="too-many-updates"),
    pytest.param(dict(normalizer_warmup_steps=8), ["normalizer_warmup_steps=8", "normalize_observations"],
                 id="warmup-without-normalisation"),
    pytest.param(dict(memory="gru", sequence_length=48), ["sequence_length=48", "divides num_steps=128"],
                 id="sequence-length-not-a-divisor"),
    pytest.param(dict(memory="gru", sequence_length=-1), ["sequence_length=-1", "must be 0"], id="sequence-length-neg"),
    pytest.param(dict(memory_shared=True), ["memory_shared=True", "only for policies with memory"],
                 id="memory-shared-without-memory"),
    pytest.param(dict(memory="gru", memory_shared=True, critic_hidden_sizes=(128,)),
                 ["memory_shared=True", "critic_hidden_sizes=(128,)", "set hidden_sizes only"],
                 id="memory-shared-sizes"),
    pytest.param(dict(memory="gru", memory_shared=1), ["memory_shared=1", "True or False"],
                 id="memory-shared-not-bool"),
    pytest.param(dict(sequence_length=16), ["sequence_length=16", "only for policies with memory"],
                 id="sequence-length-without-memory"),
    # 4 environments x 128 / 64 = 8 sequences per device: not divisible into 3 minibatches.
    pytest.param(dict(memory="gru", num_envs=4, num_minibatches=3, sequence_length=64),
                 ["num_minibatches=3", "8 sequences per device"], id="sequence-minibatches"),
    pytest.param(dict(gae_horizon=129), ["gae_horizon=129", "[0, num_steps=128]"], id="gae-horizon-too-long"),
    pytest.param(dict(gae_horizon=-1), ["gae_horizon=-1", "integer in [0,"], id="gae-horizon-negative"),
    pytest.param(dict(gae_horizon=5.0), ["gae_horizon=5.0", "integer"], id="gae-horizon-float"),
    pytest.param(dict(advantage_form="impala"), ["advantage_form='impala'", "gae, vtrace"], id="advantage-form"),
    pytest.param(dict(policy_head_gain=0.0), ["policy_head_gain=0.0", "> 0.0"], id="policy-head-gain"),
    pytest.param(dict(hidden_init="xavier"), ["hidden_init='xavier'", "orthogonal, lecun_uniform"], id="hidden-init"),
    pytest.param(dict(recompute_advantages=1), ["recompute_advantages=1", "True or False"],
                 id="recompute-advantages-not-bool"),
]

# Checks that need the environment: made when the run is built (make_train / make_agent), not by PPOConfig, so a
# config can be built and replaced without gymnax and without building an environment.
INVALID_FOR_ENV = [
    pytest.param(dict(env="CartPol-v1"), ["env='CartPol-v1'", "CartPole-v1"], id="env-typo"),
    pytest.param(dict(init_log_std=-0.5), ["init_log_std=-0.5", "continuous", "CartPole-v1"], id="log-std-discrete"),
    pytest.param(dict(network="cnn"), ["network='cnn'", "(4,)"], id="cnn-vector-obs"),
    pytest.param(dict(env="brax/ant") if importlib.util.find_spec("brax") is None else dict(env="nosuchsuite/x"),
                 ["env=", "pip install" if importlib.util.find_spec("brax") is None else "not a registered"],
                 id="suite-missing-or-unknown"),
]


@pytest.mark.parametrize("overrides, needles", INVALID)
def test_invalid_config_names_field_and_value(overrides, needles):
    with pytest.raises(ValueError) as error:
        PPOConfig(**overrides)
    message = str(error.value)
    assert message.startswith(needles[0]), message
    for needle in needles[1:]:
        assert needle in message, message


@pytest.mark.parametrize("overrides, needles", INVALID_FOR_ENV)
def test_environment_checks_happen_when_the_run_is_built(overrides, needles):
    config = PPOConfig(**overrides)  # the config alone is valid
    with pytest.raises(ValueError) as error:
        jaxppo.make_train(config)
    message = str(error.value)
    assert message.startswith(needles[0]), message
    for needle in needles[1:]:
        assert needle in message, message


def test_close_match_is_suggested_for_an_unknown_env():
    with pytest.raises(ValueError, match=r"did you mean .*CartPole-v1"):
        jaxppo.make_train(PPOConfig(env="CartPol-v1"))


def test_config_does_not_build_an_environment(monkeypatch):
    # A sweep's dataclasses.replace must not call gymnax.make for every setting.
    calls = []
    monkeypatch.setattr(gymnax, "make", lambda *a, **k: calls.append(a))
    config = PPOConfig(env="Pendulum-v1", num_envs=8)
    dataclasses.replace(config, lr=1e-3, clip_eps=0.1)
    assert calls == []


def test_derived_counts_and_rounding_note():
    config = PPOConfig(total_timesteps=500_000, num_envs=4, num_steps=128, num_minibatches=4)
    # batch = 4 * 128 = 512; minibatch = 512 / 4 = 128; updates = 500000 // 512 = 976; steps = 976 * 512 = 499712
    assert (config.batch_size, config.minibatch_size, config.num_updates, config.num_env_steps) == (
        512, 128, 976, 499_712)
    assert "499712" in config.rounding_note and "976" in config.rounding_note

    exact = PPOConfig(total_timesteps=512 * 3, num_envs=4, num_steps=128)
    assert (exact.num_updates, exact.num_env_steps, exact.rounding_note) == (3, 1536, "")


def test_envs_per_device_and_global_layout_check():
    # 8 envs over 2 devices: 4 each; per-device batch 4 * 16 = 64, divisible by 4 minibatches.
    config = PPOConfig(num_envs=8, num_devices=2, num_steps=16, num_minibatches=4)
    assert (config.envs_per_device(), config.batch_size, config.minibatch_size) == (4, 128, 32)
    # Counts are global: on 2 processes x 2 devices each device steps 2 of the 8 environments.
    assert config.envs_per_device(num_processes=2) == 2
    config.check_layout(num_processes=2)
    with pytest.raises(ValueError, match=r"num_envs=8: must be divisible by the 3 process\(es\) x 2 device"):
        config.check_layout(num_processes=3)


def test_sequences_cut_the_rollout_into_more_minibatch_units():
    # With memory, minibatches are groups of sequences: 4 environments x 128 / 32 = 16 sequences fill 8 minibatches
    # (whole rollouts: 4 sequences, too few).
    config = PPOConfig(memory="gru", num_envs=4, num_minibatches=8, sequence_length=32)
    assert config.sequences_per_env == 4
    assert PPOConfig(memory="gru", num_envs=4, sequence_length=128).sequences_per_env == 1
    assert PPOConfig(memory="gru", num_envs=4).sequences_per_env == 1
    with pytest.raises(ValueError, match="num_minibatches=8: with memory"):
        dataclasses.replace(config, sequence_length=64, num_devices=2)  # 2 envs x 2 sequences per device


def test_replace_revalidates_and_derived_counts_follow():
    # The static config is never mutated: a change is a new, validated config whose derived counts follow.
    config = PPOConfig()
    with pytest.raises(ValueError, match="num_envs=0"):
        dataclasses.replace(config, num_envs=0)
    wider = dataclasses.replace(config, num_envs=8)
    assert (config.batch_size, wider.batch_size) == (512, 1024)
    assert wider.num_updates == config.total_timesteps // 1024
    assert "batch_size" not in {f.name for f in dataclasses.fields(PPOConfig)}  # derived, never stored


@pytest.mark.parametrize("vf_clip_eps, expected", [(None, 0.3), (0.5, 0.5)])
def test_hparams_from_config(vf_clip_eps, expected):
    from jaxppo.config import hparam_names, value_clip_eps

    config = PPOConfig(lr=1e-3, clip_eps=0.3, vf_clip_eps=vf_clip_eps, ent_coef=0.02, vf_coef=0.25, gamma=0.95,
                       gae_lambda=0.9, max_grad_norm=1.5)
    hp = HParams.from_config(config)
    # One declaration: the traced names are the PPOConfig fields marked traced.
    assert hparam_names() == ("lr", "gamma", "gae_lambda", "clip_eps", "vf_clip_eps", "ent_coef", "vf_coef",
                              "max_grad_norm", "lr_schedule", "lr_final", "lr_warmup", "ent_coef_schedule",
                              "ent_coef_final", "ent_coef_warmup", "clip_eps_schedule", "clip_eps_final",
                              "clip_eps_warmup")
    # vf_clip_eps None is NaN in HParams ("follow clip_eps"), resolved where it is used.
    np.testing.assert_allclose(float(value_clip_eps(hp)), expected, rtol=1e-6)
    np.testing.assert_allclose(float(value_clip_eps(hp.replace(clip_eps=0.1))), 0.1 if vf_clip_eps is None else 0.5,
                               rtol=1e-6)
    assert np.isnan(float(hp.vf_clip_eps)) == (vf_clip_eps is None)
    want = dict(lr=1e-3, clip_eps=0.3, ent_coef=0.02, vf_coef=0.25, gamma=0.95, gae_lambda=0.9, max_grad_norm=1.5)
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
    from jaxppo.agent import make_agent

    env_id = f"TestCartPole-{uuid.uuid4().hex[:8]}"
    config = PPOConfig(env=env_id, num_envs=2, num_steps=8, num_minibatches=2, total_timesteps=64)
    with pytest.raises(ValueError, match=env_id):
        make_agent(config)
    gymnax.register(env_id, lambda **kwargs: CartPole(**kwargs))
    assert make_agent(config).spec.obs_shape == (4,) and config.num_updates == 4


def test_hparams_names_are_checked():
    hp = HParams.from_config(PPOConfig())
    with pytest.raises(ValueError, match="unknown \\['learning_rate'\\]"):
        hp.replace(learning_rate=1.0)
    with pytest.raises(AttributeError):
        hp.lr = 1.0
