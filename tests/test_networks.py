"""Action distributions against NumPy formulas, and the actor-critic's shapes, torsos and initialisation."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxppo import envs, networks
from jaxppo.config import PPOConfig
from jaxppo.networks import Categorical, DiagGaussian

LOG_2PI = np.log(2.0 * np.pi)


# ------------------------------------------------------------------------------------------------ Categorical
LOGITS = np.array([[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 0.0, 0.0], [3.0, -2.0, 1.0, 2.5]], np.float32)


def test_categorical_log_prob_entropy_mode():
    dist = Categorical(jnp.asarray(LOGITS))
    actions = np.array([1, 3, 0])
    log_p = np.zeros((3,))
    entropy = np.zeros((3,))
    for i, row in enumerate(LOGITS.astype(np.float64)):
        log_z = np.log(np.sum(np.exp(row)))
        log_p[i] = row[actions[i]] - log_z
        p = np.exp(row - log_z)
        entropy[i] = -np.sum(p * np.log(p))
    # Row 1 is uniform over 4: log_prob = -log 4 = -1.386294, entropy = log 4.
    np.testing.assert_allclose(log_p[1], -np.log(4.0), rtol=1e-12)
    chex.assert_trees_all_close(dist.log_prob(jnp.asarray(actions)), log_p.astype(np.float32), rtol=1e-5)
    chex.assert_trees_all_close(dist.entropy(), entropy.astype(np.float32), rtol=1e-5)
    chex.assert_trees_all_close(dist.mode(), jnp.array([1, 0, 0], jnp.int32))
    assert dist.mode().dtype == jnp.int32


def test_categorical_sample_frequencies():
    n = 20_000
    probs = np.array([0.1, 0.2, 0.7])
    dist = Categorical(jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), (n, 3)))
    samples = np.asarray(dist.sample(jax.random.key(0)))
    chex.assert_shape(samples, (n,))
    freq = np.bincount(samples, minlength=3) / n
    # Binomial std of a frequency is at most sqrt(0.25 / 20000) = 0.0035; 0.015 is > 4 std.
    np.testing.assert_allclose(freq, probs, atol=0.015)


# ----------------------------------------------------------------------------------------------- DiagGaussian
def test_gaussian_log_prob_and_entropy():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(2, 3)).astype(np.float32)
    log_std = rng.normal(scale=0.5, size=(2, 3)).astype(np.float32)
    action = rng.normal(size=(2, 3)).astype(np.float32)
    dist = DiagGaussian(jnp.asarray(mean), jnp.asarray(log_std))
    sigma = np.exp(log_std.astype(np.float64))
    density = np.exp(-0.5 * ((action - mean) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    log_p = np.sum(np.log(density), axis=-1)
    # Entropy of N(mu, sigma^2) per dim: 0.5 * log(2 pi e sigma^2).
    entropy = np.sum(0.5 * np.log(2 * np.pi * np.e * sigma**2), axis=-1)
    chex.assert_trees_all_close(dist.log_prob(jnp.asarray(action)), log_p.astype(np.float32), rtol=1e-5)
    chex.assert_trees_all_close(dist.entropy(), entropy.astype(np.float32), rtol=1e-5)
    chex.assert_trees_all_close(dist.mode(), mean)


def test_gaussian_hand_worked_log_prob():
    # One dim, mu = 1, sigma = 2 (log_std = log 2 = 0.693147), a = 2: z = 0.5
    # log p = -0.5 * 0.25 - 0.693147 - 0.5 * 1.837877 = -0.125 - 0.693147 - 0.918939 = -1.737086
    dist = DiagGaussian(jnp.array([1.0]), jnp.array([np.log(2.0)], jnp.float32))
    np.testing.assert_allclose(float(dist.log_prob(jnp.array([2.0]))), -1.737086, rtol=1e-5)
    # entropy = log 2 + 0.5 * (1 + 1.837877) = 0.693147 + 1.418939 = 2.112086
    np.testing.assert_allclose(float(dist.entropy()), 2.112086, rtol=1e-5)


def test_gaussian_sample_moments():
    n = 20_000
    mean = np.array([0.5, -1.0], np.float32)
    std = np.array([0.5, 2.0], np.float32)
    dist = DiagGaussian(jnp.broadcast_to(mean, (n, 2)), jnp.broadcast_to(jnp.log(std), (n, 2)))
    samples = np.asarray(dist.sample(jax.random.key(0)))
    chex.assert_shape(samples, (n, 2))
    # std of the sample mean: sigma / sqrt(n) <= 2 / 141 = 0.014; bounds are > 4 of those.
    np.testing.assert_allclose(samples.mean(axis=0), mean, atol=0.06)
    np.testing.assert_allclose(samples.std(axis=0), std, rtol=0.03)
    # The two dims are drawn independently.
    assert abs(np.corrcoef(samples.T)[0, 1]) < 0.05


# ----------------------------------------------------------------------------------------------------- networks
def _build(config: PPOConfig, seed: int = 0):
    spec = envs.env_spec(*envs.make_env(config.env))
    network = networks.make_network(config, spec)
    return network, networks.init_params(network, spec, jax.random.key(seed)), spec


@pytest.fixture(scope="module")
def cartpole():
    return _build(PPOConfig())


def test_output_shapes_follow_leading_axes(cartpole):
    network, params, _ = cartpole
    for lead in [(7,), (3, 5), (2, 3, 5)]:
        dist, values = jax.eval_shape(network.apply, params, jax.ShapeDtypeStruct(lead + (4,), jnp.float32))
        chex.assert_shape((dist.logits, values), [lead + (2,), lead])
    # Leading axes are only a batch layout: the [3, 5] outputs are those of the flat [15, 4] batch.
    obs = jax.random.normal(jax.random.key(1), (3, 5, 4))
    dist, values = network.apply(params, obs)
    chex.assert_shape((dist.logits, values), [(3, 5, 2), (3, 5)])
    flat_dist, flat_values = network.apply(params, obs.reshape(15, 4))
    chex.assert_trees_all_close(dist.logits.reshape(15, 2), flat_dist.logits, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(values.reshape(15), flat_values, rtol=1e-6, atol=1e-7)
    # And row i of the batch is the output for obs i alone.
    one_dist, one_value = network.apply(params, obs[1, 2])
    chex.assert_shape((one_dist.logits, one_value), [(2,), ()])
    chex.assert_trees_all_close(one_dist.logits, dist.logits[1, 2], rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(one_value, values[1, 2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("init_log_std, expected", [(-0.5, -0.5), (None, 0.0)])
def test_continuous_policy_log_std_init(init_log_std, expected):
    network, params, spec = _build(PPOConfig(env="Pendulum-v1", init_log_std=init_log_std))
    assert spec.continuous and spec.num_actions == 1
    chex.assert_trees_all_close(params["params"]["log_std"], jnp.array([expected]))
    dist, values = network.apply(params, jax.random.normal(jax.random.key(1), (6, 3)))
    assert isinstance(dist, DiagGaussian)
    chex.assert_shape((dist.mean, dist.log_std, values), [(6, 1), (6, 1), (6,)])
    chex.assert_trees_all_close(dist.log_std, jnp.full((6, 1), expected))
    chex.assert_shape(dist.entropy(), (6,))


def _kernels(params):
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(params) if path[-1].key == "kernel"}


def _abstract(config: PPOConfig):
    """Network and parameter shapes only (jax.eval_shape: nothing is initialised or compiled)."""
    spec = envs.env_spec(*envs.make_env(config.env))
    network = networks.make_network(config, spec)
    params = jax.eval_shape(lambda key: networks.init_params(network, spec, key), jax.random.key(0))
    return network, params, spec


def test_image_observations_get_a_cnn_unless_mlp_is_asked_for():
    network, params, spec = _abstract(PPOConfig(env="Breakout-MinAtar"))
    assert spec.obs_shape == (10, 10, 4)
    conv = {name: k.shape for name, k in _kernels(params).items() if "/conv/" in name}
    # One 3x3 conv with 16 filters over 4 channels in each of the actor and the critic torso, stored as a
    # (4*3*3, 16) patch kernel; VALID padding leaves 8*8*16 = 1024 features for the first dense layer.
    assert conv == {"params/actor_torso/conv/kernel": (36, 16), "params/critic_torso/conv/kernel": (36, 16)}
    assert _kernels(params)["params/actor_torso/Dense_0/kernel"].shape == (1024, 64)
    dist, values = jax.eval_shape(network.apply, params, jax.ShapeDtypeStruct((2,) + spec.obs_shape, jnp.float32))
    chex.assert_shape((dist.logits, values), [(2, 3), (2,)])

    mlp_network, mlp_params, _ = _abstract(PPOConfig(env="Breakout-MinAtar", network="mlp"))
    kernels = _kernels(mlp_params)
    assert not any("/conv/" in name for name in kernels)
    assert all(len(k.shape) == 2 for k in kernels.values())
    # The MLP flattens the 10*10*4 = 400 inputs.
    assert kernels["params/actor_torso/Dense_0/kernel"].shape == (400, 64)
    dist, values = jax.eval_shape(mlp_network.apply, mlp_params,
                                  jax.ShapeDtypeStruct((2,) + spec.obs_shape, jnp.float32))
    chex.assert_shape((dist.logits, values), [(2, 3), (2,)])


def _assert_orthogonal(kernel, gain):
    """Columns (or rows, whichever are fewer) orthogonal with norm `gain`."""
    k = np.asarray(kernel, np.float64)
    gram = k.T @ k if k.shape[0] >= k.shape[1] else k @ k.T
    np.testing.assert_allclose(gram / gain**2, np.eye(gram.shape[0]), atol=1e-5)


def test_orthogonal_initialisation_and_zero_biases(cartpole):
    _, params, _ = cartpole
    p = params["params"]
    assert p["actor_head"]["kernel"].shape == (64, 2)
    _assert_orthogonal(p["actor_head"]["kernel"], 0.01)  # two orthogonal columns of norm 0.01
    _assert_orthogonal(p["critic_head"]["kernel"], 1.0)  # one column of norm 1
    np.testing.assert_allclose(np.linalg.norm(p["critic_head"]["kernel"]), 1.0, rtol=1e-5)
    for torso in ("actor_torso", "critic_torso"):
        _assert_orthogonal(p[torso]["Dense_0"]["kernel"], np.sqrt(2.0))  # [4, 64]: rows
        _assert_orthogonal(p[torso]["Dense_1"]["kernel"], np.sqrt(2.0))  # [64, 64]
    biases = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params) if path[-1].key == "bias"]
    assert len(biases) == 6
    for bias in biases:
        np.testing.assert_array_equal(bias, np.zeros_like(bias))


def test_actor_and_critic_share_no_parameters(cartpole):
    network, params, _ = cartpole
    p = params["params"]
    assert set(p) == {"actor_torso", "actor_head", "critic_torso", "critic_head"}
    assert not np.allclose(p["actor_torso"]["Dense_0"]["kernel"], p["critic_torso"]["Dense_0"]["kernel"])
    obs = jax.random.normal(jax.random.key(3), (4, 4))

    def outputs(params):
        dist, values = network.apply(params, obs)
        return jnp.sum(dist.logits), jnp.sum(values)

    grad_logits, grad_values = jax.jit(jax.jacrev(outputs))(params)
    for part, grad in (("actor", grad_values), ("critic", grad_logits)):
        # The values do not depend on actor parameters and the logits not on critic parameters.
        for name in (f"{part}_torso", f"{part}_head"):
            for leaf in jax.tree_util.tree_leaves(grad["params"][name]):
                np.testing.assert_array_equal(leaf, np.zeros_like(leaf))
    assert float(jnp.abs(grad_values["params"]["critic_torso"]["Dense_0"]["kernel"]).sum()) > 0
    assert float(jnp.abs(grad_logits["params"]["actor_torso"]["Dense_0"]["kernel"]).sum()) > 0


def test_patch_conv_equals_a_3x3_valid_convolution():
    config = PPOConfig(env="Breakout-MinAtar")
    spec = envs.env_spec(*envs.make_env(config.env))
    torso = networks.Torso((8,), "relu", use_cnn=True)
    obs = jax.random.normal(jax.random.key(0), (3,) + spec.obs_shape)
    params = torso.init(jax.random.key(1), obs)
    kernel = params["params"]["conv"]["kernel"]  # [C*3*3, 16], patch features ordered (C, kh, kw)
    hwio = jnp.transpose(kernel.reshape(4, 3, 3, 16), (1, 2, 0, 3))
    conv = jax.lax.conv_general_dilated(obs, hwio, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    hidden = jax.nn.relu(conv + params["params"]["conv"]["bias"]).reshape(3, -1)
    dense = params["params"]["Dense_0"]
    expected = jax.nn.relu(hidden @ dense["kernel"] + dense["bias"])
    np.testing.assert_allclose(torso.apply(params, obs), expected, rtol=1e-5, atol=1e-5)
