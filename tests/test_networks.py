"""The actor-critic network: sequence layout, initialisation, CNN torso, separate actor and critic, GRU core."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxppo import networks
from jaxppo.agent import make_agent
from jaxppo.config import PPOConfig


def _apply(network, params, obs, first=None, carry=None):
    """Network on observations [T, B, *obs] from the initial carry (first defaults to no episode start)."""
    t, b = obs.shape[:2]
    first = jnp.zeros((t, b), bool) if first is None else first
    carry = network.initial_carry(b) if carry is None else carry
    return network.apply(params, carry, obs, first)


def _build(config: PPOConfig, seed: int = 0):
    agent = make_agent(config)
    return agent.network, networks.init_params(agent.network, agent.spec, jax.random.key(seed)), agent.spec


@pytest.fixture(scope="module")
def cartpole():
    return _build(PPOConfig())


def test_sequence_layout_of_a_feed_forward_network(cartpole):
    network, params, _ = cartpole
    for t, b in [(1, 7), (3, 5), (16, 2)]:
        carry, logits, values = jax.eval_shape(lambda o: _apply(network, params, o),
                                               jax.ShapeDtypeStruct((t, b, 4), jnp.float32))
        assert carry == ()
        chex.assert_shape((logits, values), [(t, b, 2), (t, b)])
    # [T, B] is only a batch layout without memory: the [3, 5] outputs are those of the flat [1, 15] batch.
    obs = jax.random.normal(jax.random.key(1), (3, 5, 4))
    _, logits, values = _apply(network, params, obs)
    _, flat_logits, flat_values = _apply(network, params, obs.reshape(1, 15, 4))
    chex.assert_trees_all_close(logits.reshape(15, 2), flat_logits[0], rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(values.reshape(15), flat_values[0], rtol=1e-6, atol=1e-7)
    # And entry (1, 2) is the output for that observation alone.
    _, one_logits, one_value = _apply(network, params, obs[1:2, 2:3])
    chex.assert_trees_all_close(one_logits[0, 0], logits[1, 2], rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(one_value[0, 0], values[1, 2], rtol=1e-5, atol=1e-6)
    # value_from (a truncated step's bootstrap) is the critic's value.
    chex.assert_trees_all_close(network.apply(params, (), obs[1], method=network.value_from), values[1],
                                rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("init_log_std, expected", [(-0.5, -0.5), (None, 0.0)])
def test_continuous_policy_log_std_init(init_log_std, expected):
    from jaxppo.distributions import DiagGaussian

    config = PPOConfig(env="Pendulum-v1", init_log_std=init_log_std)
    network, params, spec = _build(config)
    assert spec.continuous and spec.num_actions == 1
    chex.assert_trees_all_close(params["params"]["actor_head"]["log_std"], jnp.array([expected]))
    _, dist_params, values = _apply(network, params, jax.random.normal(jax.random.key(1), (1, 6, 3)))
    dist = make_agent(config).family.create(jax.tree.map(lambda x: x[0], dist_params), None)
    assert isinstance(dist, DiagGaussian)
    chex.assert_shape((dist.mean, dist.log_std, values[0]), [(6, 1), (6, 1), (6,)])
    chex.assert_trees_all_close(dist.log_std, jnp.full((6, 1), expected))
    chex.assert_shape(dist.entropy(), (6,))


def _kernels(params):
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(params) if path[-1].key == "kernel"}


def _abstract(config: PPOConfig):
    """Network and parameter shapes only (jax.eval_shape: nothing is initialised or compiled)."""
    agent = make_agent(config)
    params = jax.eval_shape(lambda key: networks.init_params(agent.network, agent.spec, key), jax.random.key(0))
    return agent.network, params, agent.spec


def test_image_observations_get_a_cnn_unless_mlp_is_asked_for():
    network, params, spec = _abstract(PPOConfig(env="Breakout-MinAtar"))
    assert spec.obs_shape == (10, 10, 4)
    conv = {name: k.shape for name, k in _kernels(params).items() if "/conv/" in name}
    # One 3x3 conv with 16 filters over 4 channels in each of the actor and the critic torso, stored as a
    # (4*3*3, 16) patch kernel; VALID padding leaves 8*8*16 = 1024 features for the first dense layer.
    assert conv == {"params/actor_torso/conv/kernel": (36, 16), "params/critic_torso/conv/kernel": (36, 16)}
    assert _kernels(params)["params/actor_torso/Dense_0/kernel"].shape == (1024, 64)
    _, logits, values = jax.eval_shape(lambda p, o: _apply(network, p, o), params,
                                       jax.ShapeDtypeStruct((1, 2) + spec.obs_shape, jnp.float32))
    chex.assert_shape((logits, values), [(1, 2, 3), (1, 2)])

    mlp_network, mlp_params, _ = _abstract(PPOConfig(env="Breakout-MinAtar", network="mlp"))
    kernels = _kernels(mlp_params)
    assert not any("/conv/" in name for name in kernels)
    assert all(len(k.shape) == 2 for k in kernels.values())
    # The MLP flattens the 10*10*4 = 400 inputs.
    assert kernels["params/actor_torso/Dense_0/kernel"].shape == (400, 64)
    _, logits, values = jax.eval_shape(lambda p, o: _apply(mlp_network, p, o), mlp_params,
                                       jax.ShapeDtypeStruct((1, 2) + spec.obs_shape, jnp.float32))
    chex.assert_shape((logits, values), [(1, 2, 3), (1, 2)])


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


@pytest.mark.parametrize("distribution", ["categorical", "tanh_gaussian"])
def test_policy_head_gain_sets_the_norm_of_every_policy_output_layer(distribution):
    # policy_head_gain scales the logits layer, or the Gaussian's mean and state-dependent scale layers; the
    # scale layer's bias still starts every state at init_scale's raw value.
    env = dict(categorical="CartPole-v1", tanh_gaussian="Pendulum-v1")[distribution]
    extra = dict(scale_type="state_dependent", init_scale=0.5) if distribution == "tanh_gaussian" else {}
    _, params, _ = _build(PPOConfig(env=env, distribution=distribution, policy_head_gain=0.7, **extra))
    head = params["params"]["actor_head"]
    kernels = [head["kernel"]] if distribution == "categorical" else [head["mean"]["kernel"], head["scale"]["kernel"]]
    for kernel in kernels:
        _assert_orthogonal(kernel, 0.7)
    if distribution == "tanh_gaussian":
        np.testing.assert_allclose(head["scale"]["bias"], np.log(0.5), rtol=1e-6)


def test_lecun_uniform_hidden_init_draws_hidden_kernels_with_variance_one_over_fan_in():
    # Brax's initialiser for the hidden layers only: bounded by sqrt(3 / fan_in) with variance 1 / fan_in (not an
    # orthogonal matrix), zero biases; the heads are exactly as with the default init from the same key.
    config = PPOConfig(env="Pendulum-v1", hidden_sizes=(256, 256), distribution="tanh_gaussian",
                       scale_type="state_dependent")
    _, default, _ = _build(config)
    _, lecun, _ = _build(dataclasses.replace(config, hidden_init="lecun_uniform"))
    for torso in ("actor_torso", "critic_torso"):
        for layer, fan_in in (("Dense_0", 3), ("Dense_1", 256)):
            kernel = np.asarray(lecun["params"][torso][layer]["kernel"], np.float64)
            assert np.abs(kernel).max() <= np.sqrt(3.0 / fan_in) + 1e-7
            np.testing.assert_allclose(kernel.var(), 1.0 / fan_in, rtol=0.05 if fan_in == 256 else 0.2)
            np.testing.assert_array_equal(lecun["params"][torso][layer]["bias"], 0.0)
        gram = np.asarray(lecun["params"][torso]["Dense_1"]["kernel"], np.float64)
        gram = gram.T @ gram
        assert np.abs(gram - np.diag(np.diag(gram))).max() > 0.1  # not orthogonal
    chex.assert_trees_all_equal(lecun["params"]["actor_head"], default["params"]["actor_head"])
    chex.assert_trees_all_equal(lecun["params"]["critic_head"], default["params"]["critic_head"])


def test_actor_and_critic_share_no_parameters(cartpole):
    network, params, _ = cartpole
    p = params["params"]
    assert set(p) == {"actor_torso", "actor_head", "critic_torso", "critic_head"}
    assert not np.allclose(p["actor_torso"]["Dense_0"]["kernel"], p["critic_torso"]["Dense_0"]["kernel"])
    obs = jax.random.normal(jax.random.key(3), (1, 4, 4))

    def outputs(params):
        _, logits, values = _apply(network, params, obs)
        return jnp.sum(logits), jnp.sum(values)

    grad_logits, grad_values = jax.jit(jax.jacrev(outputs))(params)
    for part, grad in (("actor", grad_values), ("critic", grad_logits)):
        # The values do not depend on actor parameters and the logits not on critic parameters.
        for name in (f"{part}_torso", f"{part}_head"):
            for leaf in jax.tree_util.tree_leaves(grad["params"][name]):
                np.testing.assert_array_equal(leaf, np.zeros_like(leaf))
    assert float(jnp.abs(grad_values["params"]["critic_torso"]["Dense_0"]["kernel"]).sum()) > 0
    assert float(jnp.abs(grad_logits["params"]["actor_torso"]["Dense_0"]["kernel"]).sum()) > 0


def test_patch_conv_equals_a_3x3_valid_convolution():
    spec = make_agent(PPOConfig(env="Breakout-MinAtar")).spec
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


def test_parameters_of_vmapped_seeds_equal_one_seed_at_a_time():
    # Under vmap the initialiser runs the seeds one after another (no batched QR: the jaxlib 0.10 LAPACK deadlock);
    # the result is exactly the per-seed initialisation.
    agent = make_agent(PPOConfig())
    keys = jax.random.split(jax.random.key(5), 3)
    batched = jax.jit(jax.vmap(lambda k: networks.init_params(agent.network, agent.spec, k)))(keys)
    for i in range(3):
        single = networks.init_params(agent.network, agent.spec, keys[i])
        chex.assert_trees_all_equal(jax.tree.map(lambda x: x[i], batched), single)
    text = jax.jit(jax.vmap(lambda k: networks.init_params(agent.network, agent.spec, k))).lower(keys).as_text()
    # Every LAPACK call (QR: geqrf, orgqr) in the lowered program works on one unbatched matrix.
    lapack = [line for line in text.splitlines() if "custom_call @lapack_" in line]
    assert lapack and all('num_batch_dims = "0"' in line for line in lapack), lapack[:2]


def test_parameter_count_from_shapes_matches_a_hand_count():
    from jaxppo.footprint import parameter_count

    config = PPOConfig()
    # Per torso: 4*64 + 64 + 64*64 + 64 = 4,480 (two torsos: 8,960); policy head 64*2 + 2 = 130; value head 65.
    assert parameter_count(config, make_agent(config).spec) == 8960 + 130 + 65
    # A memory core counts as built (GRU 8 wide on 64 features, per branch: input 64*24 + 24, recurrent 8*24 + 8;
    # heads then read 8 features).
    gru = PPOConfig(memory="gru", memory_size=8)
    assert parameter_count(gru, make_agent(gru).spec) == 8960 + 2 * (64 * 24 + 24 + 8 * 24 + 8) + (8 * 2 + 2) + 9


def test_head_hidden_layers_sit_between_each_branch_and_its_output_layer():
    """head_hidden_sizes=(8, 6): each head runs two layers of its own (orthogonal sqrt 2, zero bias) on its branch's
    torso features before its output layer; checked against the composition written by hand."""
    network, params, _ = _build(PPOConfig(hidden_sizes=(5,), head_hidden_sizes=(8, 6)))
    p = params["params"]
    assert set(p) == {"actor_torso", "critic_torso", "actor_head_layers", "critic_head_layers", "actor_head",
                      "critic_head"}
    for head in ("actor_head_layers", "critic_head_layers"):
        assert [p[head][f"Dense_{i}"]["kernel"].shape for i in range(2)] == [(5, 8), (8, 6)]
        _assert_orthogonal(p[head]["Dense_0"]["kernel"], np.sqrt(2.0))
    obs = jax.random.normal(jax.random.key(1), (3, 2, 4))
    _, logits, values = _apply(network, params, obs)
    dense = lambda q, x: x @ q["kernel"] + q["bias"]
    mlp = lambda q, x: jnp.tanh(dense(q["Dense_1"], jnp.tanh(dense(q["Dense_0"], x))))
    actor, critic = (jnp.tanh(dense(p[t]["Dense_0"], obs)) for t in ("actor_torso", "critic_torso"))
    np.testing.assert_allclose(logits, dense(p["actor_head"], mlp(p["actor_head_layers"], actor)), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(values, dense(p["critic_head"], mlp(p["critic_head_layers"], critic))[..., 0],
                               rtol=1e-5, atol=1e-6)
    # The default () adds nothing: the parameter tree of every network before this option.
    _, plain, _ = _build(PPOConfig(hidden_sizes=(5,)))
    assert set(plain["params"]) == {"actor_torso", "critic_torso", "actor_head", "critic_head"}
