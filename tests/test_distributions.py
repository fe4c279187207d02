"""Action distributions: categorical (with legal-action masks), diagonal Gaussian and tanh-squashed Gaussian against
hand-worked numbers and NumPy references; the Gaussian scale options; the continuous probe solved with every option;
the choice carried by configs, checkpoints and `jaxppo.load`."""

from __future__ import annotations

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxppo
from jaxppo.agent import make_agent
from jaxppo.config import IDENTITY, PPOConfig, fields_with
from jaxppo.distributions import Categorical, DiagGaussian, GaussianFamily, TanhGaussian, TanhGaussianFamily
from jaxppo.networks import init_params
from tests import helpers, probe_envs

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



# -------------------------------------------------------------------------------------------------- masking
def test_masked_sampling_and_mode_never_pick_illegal_actions():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2000, 5)) * 3.0, jnp.float32)
    mask = jnp.asarray(rng.random((2000, 5)) < 0.5)
    mask = mask.at[:, 0].set(mask[:, 0] | ~jnp.any(mask, axis=1))  # at least one legal action per row
    dist = Categorical(logits, mask)
    for seed in range(5):
        actions = np.asarray(dist.sample(jax.random.key(seed)))
        assert np.asarray(mask)[np.arange(2000), actions].all()
    greedy = np.asarray(dist.mode())
    assert np.asarray(mask)[np.arange(2000), greedy].all()
    # The mode is the best legal logit.
    expected = np.argmax(np.where(np.asarray(mask), np.asarray(logits), -np.inf), axis=1)
    np.testing.assert_array_equal(greedy, expected)


def test_masked_probabilities_sum_to_one_over_legal_actions_and_illegal_are_exactly_zero():
    logits = jnp.array([[1.0, 2.0, 3.0, -1.0]])
    mask = jnp.array([[True, False, True, True]])
    dist = Categorical(logits, mask)
    all_log_probs = np.array([float(dist.log_prob(jnp.array([a]))[0]) for a in range(4)])
    probs = np.exp(all_log_probs)
    assert probs[1] == 0.0
    np.testing.assert_allclose(probs[[0, 2, 3]].sum(), 1.0, rtol=1e-6)
    # By hand: softmax over the legal logits [1, 3, -1].
    legal = np.exp([1.0, 3.0, -1.0]) / np.exp([1.0, 3.0, -1.0]).sum()
    np.testing.assert_allclose(probs[[0, 2, 3]], legal, rtol=1e-6)
    # Entropy of the renormalised legal distribution p = [0.1173, 0.8668, 0.0159]:
    #   -(0.1173 ln 0.1173 + 0.8668 ln 0.8668 + 0.0159 ln 0.0159) = 0.2514 + 0.1239 + 0.0658 = 0.4411
    np.testing.assert_allclose(float(dist.entropy()[0]), -(legal * np.log(legal)).sum(), rtol=1e-5)
    np.testing.assert_allclose(float(dist.entropy()[0]), 0.4411, rtol=2e-4)
    assert np.isfinite(all_log_probs[1])  # finite floor, never NaN


def test_masked_logits_get_no_gradient():
    mask = jnp.array([True, False, True])

    def loss(logits):
        dist = Categorical(logits, mask)
        return dist.log_prob(jnp.array(2)) + dist.entropy()

    grad = jax.grad(loss)(jnp.array([0.5, 1.5, -0.3]))
    assert float(grad[1]) == 0.0 and float(jnp.abs(grad[0])) > 0 and float(jnp.abs(grad[2])) > 0


def test_all_false_mask_stays_finite():
    dist = Categorical(jnp.array([[0.3, -0.2]]), jnp.array([[False, False]]))
    assert np.isfinite(np.asarray(dist.entropy())).all()
    assert np.isfinite(np.asarray(dist.log_prob(jnp.array([0])))).all()


def test_pre_drawn_noise_gives_the_same_samples_as_a_key():
    logits = jax.random.normal(jax.random.key(0), (7, 4))
    key = jax.random.key(1)
    dist = Categorical(logits)
    np.testing.assert_array_equal(dist.sample(key), dist.sample_from(dist.noise(key)))
    gauss = DiagGaussian(jax.random.normal(key, (7, 2)), jnp.full((7, 2), -0.3))
    np.testing.assert_array_equal(gauss.sample(key), gauss.sample_from(gauss.noise(key)))
    squashed = TanhGaussian(jax.random.normal(key, (7, 2)), jnp.full((7, 2), -0.3))
    np.testing.assert_array_equal(squashed.sample(key), squashed.sample_from(squashed.noise(key)))


# ----------------------------------------------------------------------------------------------- TanhGaussian
def _squashed_log_density(a: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """float64 reference: log p_A(a) = sum_d log N(atanh(a_d); mu_d, sigma_d) - log(1 - a_d^2), a in (-1, 1)."""
    u = np.arctanh(a)
    return np.sum(-0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * LOG_2PI - np.log1p(-(a**2)), axis=-1)


def test_tanh_gaussian_hand_worked_log_prob():
    # mu = 0, sigma = 1, u = atanh(0.5) = 0.549306: log N(u) = -0.918939 - 0.5 * 0.301737 = -1.069808;
    # log(1 - 0.5^2) = log 0.75 = -0.287682; log p(a = 0.5) = -1.069808 + 0.287682 = -0.782126.
    dist = TanhGaussian(jnp.zeros((1,)), jnp.zeros((1,)))
    np.testing.assert_allclose(float(dist.log_prob(jnp.array([np.arctanh(0.5)], jnp.float32))), -0.782126,
                               rtol=1e-5)


def test_tanh_gaussian_log_prob_matches_numpy_reference_up_to_the_bounds():
    rng = np.random.default_rng(0)
    # Squashed actions from the middle of the range to 1e-12 of a bound (tanh(u) is 1.0 in float32 from |u| ~ 9).
    a = np.array([0.0, 0.5, -0.9, 0.999, -0.99999, 1 - 1e-7, -(1 - 1e-9), 1 - 1e-12], np.float64)
    u = np.arctanh(a).astype(np.float32)  # the pre-squash values the rollout stores
    mean = rng.normal(size=(8, 1)).astype(np.float32) * np.float32(3.0)
    log_std = rng.normal(scale=0.5, size=(8, 1)).astype(np.float32)
    u64 = u.astype(np.float64)[:, None]
    expected = _squashed_log_density(np.tanh(u64), mean.astype(np.float64), np.exp(log_std.astype(np.float64)))
    got = TanhGaussian(jnp.asarray(mean), jnp.asarray(log_std)).log_prob(jnp.asarray(u[:, None]))
    assert np.isfinite(np.asarray(got)).all()
    np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-5, atol=2e-4)
    # Beyond float64's tanh (|u| = 40): log(1 - tanh^2) = -2 log cosh u still holds, and gradients stay finite.
    far = jnp.array([[40.0], [-40.0]])
    dist = TanhGaussian(jnp.zeros((2, 1)), jnp.zeros((2, 1)))
    np.testing.assert_allclose(np.asarray(dist.log_prob(far)),
                               -0.5 * 1600.0 - 0.5 * LOG_2PI + 2.0 * np.log(np.cosh(40.0)), rtol=1e-6)
    grads = jax.grad(lambda m, s: jnp.sum(TanhGaussian(m, s).log_prob(far)), argnums=(0, 1))(
        jnp.zeros((2, 1)), jnp.zeros((2, 1)))
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


@pytest.mark.parametrize("mean, std, tol", [(0.0, 0.05, 2e-4), (0.0, 1.0, 2e-4), (1.5, 0.3, 2e-4), (-4.0, 1.0, 2e-4),
                                            (0.7, 2.0, 5e-4), (0.0, 3.0, 4e-3)])
def test_tanh_gaussian_entropy_matches_numerical_integration(mean, std, tol):
    # H = -integral phi(u) log p_A(tanh u) du, by the trapezoid rule over mu +- 14 sigma (400k points, float64:
    # exact to ~1e-9). The 32-node Gauss-Hermite estimate is within 1e-7 of it for sigma <= 1, 1.3e-4 at sigma = 2
    # and 2.7e-3 at sigma = 3 (0.07 %); leaving out the Jacobian term would be off by 0.0025 to 3.6 here.
    u = np.linspace(mean - 14 * std, mean + 14 * std, 400_001)
    phi = np.exp(-0.5 * ((u - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))
    # log p_A(tanh u) in u: log N(u) + 2 log cosh u (tanh u rounds to 1 in float64 beyond |u| ~ 19).
    log_cosh = np.abs(u) + np.log1p(np.exp(-2.0 * np.abs(u))) - np.log(2.0)
    log_p = -0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * LOG_2PI + 2.0 * log_cosh
    expected = -np.trapezoid(phi * log_p, u)
    dist = TanhGaussian(jnp.full((1,), mean, jnp.float32), jnp.full((1,), np.log(std), jnp.float32))
    np.testing.assert_allclose(float(dist.entropy()), expected, atol=tol)


def test_tanh_gaussian_entropy_peaks_in_sigma_unlike_the_gaussians():
    # d H / d log sigma: +1 per dimension for a Gaussian at any sigma; for the squashed action, positive while
    # sigma is small and negative once a wider u only piles actions onto the bounds (sigma = 3).
    def slope(log_std):
        return float(jax.grad(lambda s: TanhGaussian(jnp.zeros((1,)), s[None]).entropy())(jnp.float32(log_std)))

    assert slope(np.log(0.3)) > 0.5 and slope(np.log(3.0)) < -0.5


@pytest.mark.parametrize("family_cls", [TanhGaussianFamily, GaussianFamily])
def test_env_actions_are_inside_the_bounds(family_cls):
    low, high = (-1.0, 0.0), (3.0, 0.5)
    family = family_cls((2,), low, high)
    # Means from far below to far above the range, narrow to very wide; noise from the rollout's random words.
    mean = jnp.asarray(np.repeat(np.array([-50.0, -3.0, 0.0, 3.0, 50.0], np.float32), 3))[:, None, None]
    log_std = jnp.asarray(np.tile(np.array([-5.0, 0.0, 3.0], np.float32), 5))[:, None, None]
    bits = jax.random.bits(jax.random.key(0), (15, 4000, 2), jnp.uint32)
    dist = family.create((jnp.broadcast_to(mean, (15, 4000, 2)), jnp.broadcast_to(log_std, (15, 4000, 2))), None)
    actions = np.asarray(family.to_env(dist.sample_from(family.noise(bits))))
    assert np.isfinite(actions).all()
    assert (actions >= np.array(low, np.float32)).all() and (actions <= np.array(high, np.float32)).all()
    # Far outside the range the action sits on the bound itself. A narrow policy with mean 0 sits mid-range
    # (squashed) or at clip(0) (Gaussian).
    np.testing.assert_array_equal(actions[12], np.broadcast_to(np.array(high, np.float32), (4000, 2)))
    middle = [1.0, 0.25] if family_cls is TanhGaussianFamily else [0.0, 0.0]
    np.testing.assert_allclose(np.median(actions[6], axis=0), middle, atol=0.01)


def test_tanh_family_maps_the_squashed_mode_onto_the_bounds():
    family = TanhGaussianFamily((1,), (-1.0,), (3.0,))
    u = jnp.array([[0.0], [np.arctanh(0.5)], [-np.arctanh(0.5)]], jnp.float32)
    # low + (tanh(u) + 1) / 2 * (high - low) = -1 + 2 (tanh(u) + 1): 1, 2, 0.
    np.testing.assert_allclose(np.asarray(family.to_env(u)).ravel(), [1.0, 2.0, 0.0], atol=1e-6)


# --------------------------------------------------------------------------------------------- scale options
SCALE_OPTIONS = [
    dict(scale_type="state_independent", scale_fn="exp"),
    dict(scale_type="state_independent", scale_fn="softplus", min_scale=0.01),
    dict(scale_type="state_dependent", scale_fn="exp", min_scale=0.05),
    dict(scale_type="state_dependent", scale_fn="softplus", min_scale=0.001),
]


@pytest.mark.parametrize("options", SCALE_OPTIONS, ids=lambda o: f"{o['scale_type']}-{o['scale_fn']}")
def test_scale_starts_at_init_scale_and_never_drops_below_min_scale(options):
    config = PPOConfig(env="Pendulum-v1", distribution="tanh_gaussian", init_scale=0.4, **options)
    agent = make_agent(config)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    obs = jax.random.normal(jax.random.key(1), (1, 16, 3))
    _, dist_params, _ = agent.network.apply(params, (), obs, jnp.zeros((1, 16), bool))
    std = np.exp(np.asarray(dist_params[1]))
    # State-dependent heads start at init_scale up to their gain-0.01 kernel's contribution, which makes the scale
    # differ between observations; a state-independent scale is one number per dimension.
    dependent = options["scale_type"] == "state_dependent"
    np.testing.assert_allclose(std, 0.4, rtol=0.03 if dependent else 1e-6)
    assert (np.ptp(std) > 1e-5) == dependent
    # Drive the raw scale to -1000: sigma = fn(raw) + min_scale falls to the floor, and log sigma stays finite.
    head = dict(params["params"]["actor_head"])
    if options["scale_type"] == "state_dependent":
        head["scale"] = {"kernel": jnp.zeros_like(head["scale"]["kernel"]),
                         "bias": jnp.full_like(head["scale"]["bias"], -1000.0)}
    else:
        name = "log_std" if options["scale_fn"] == "exp" else "scale"
        head[name] = jnp.full_like(head[name], -1000.0)
    low = {"params": {**params["params"], "actor_head": head}}
    _, (_, log_std), _ = agent.network.apply(low, (), obs, jnp.zeros((1, 16), bool))
    floor = options.get("min_scale", 0.0)
    if floor:
        np.testing.assert_allclose(np.exp(np.asarray(log_std)), floor, rtol=1e-5)
    else:
        np.testing.assert_array_equal(np.asarray(log_std), -1000.0)  # exp: log sigma is the raw parameter


def test_default_continuous_head_is_the_classic_log_std_parameter():
    agent = make_agent(PPOConfig(env="Pendulum-v1", init_log_std=-0.5))
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    head = params["params"]["actor_head"]
    assert set(head) == {"mean", "log_std"} and isinstance(agent.family, GaussianFamily)
    assert not isinstance(agent.family, TanhGaussianFamily)
    np.testing.assert_array_equal(np.asarray(head["log_std"]), np.array([-0.5], np.float32))
    # init_scale is the same choice written as a standard deviation.
    same = init_params(make_agent(PPOConfig(env="Pendulum-v1", init_scale=float(np.exp(-0.5)))).network,
                       agent.spec, jax.random.key(0))
    chex.assert_trees_all_close(same, params, rtol=1e-6)


def test_actor_and_critic_sizes_shape_their_own_torsos():
    config = PPOConfig(env="Pendulum-v1", hidden_sizes=(8,), actor_hidden_sizes=(32, 32, 32, 32),
                       critic_hidden_sizes=[256, 256, 256, 256, 256])
    assert config.critic_hidden_sizes == (256,) * 5  # lists (JSON, flags) become tuples
    agent = make_agent(config)
    shapes = jax.eval_shape(lambda k: init_params(agent.network, agent.spec, k), jax.random.key(0))["params"]
    assert [shapes["actor_torso"][f"Dense_{i}"]["kernel"].shape for i in range(4)] == [(3, 32)] + [(32, 32)] * 3
    assert [shapes["critic_torso"][f"Dense_{i}"]["kernel"].shape for i in range(5)] == [(3, 256)] + [(256, 256)] * 4
    assert shapes["actor_head"]["mean"]["kernel"].shape == (32, 1) and shapes["critic_head"]["kernel"].shape == (256, 1)
    # Unset, both follow hidden_sizes.
    assert PPOConfig(hidden_sizes=(16,)).actor_sizes == PPOConfig(hidden_sizes=(16,)).critic_sizes == (16,)


@pytest.mark.parametrize("fields, words", [
    (dict(distribution="beta"), ["distribution='beta'", "tanh_gaussian"]),
    (dict(scale_type="learned"), ["scale_type='learned'", "state_dependent"]),
    (dict(scale_fn="relu"), ["scale_fn='relu'", "softplus"]),
    (dict(min_scale=-0.1), ["min_scale=-0.1", ">= 0"]),
    (dict(min_scale=float("nan")), ["min_scale=nan", "finite"]),
    (dict(min_scale=1.0), ["min_scale=1.0", "below the initial scale 1"]),
    (dict(init_scale=0.2, min_scale=0.3), ["min_scale=0.3", "below the initial scale 0.2"]),
    (dict(init_scale=0.0), ["init_scale=0.0", "> 0"]),
    (dict(init_scale=0.5, init_log_std=0.1), ["init_scale=0.5", "not both"]),
    (dict(actor_hidden_sizes=()), ["actor_hidden_sizes=()", "positive ints"]),
    (dict(critic_hidden_sizes=(64, 0)), ["critic_hidden_sizes=(64, 0)", "positive ints"]),
])
def test_config_errors_are_one_line_naming_the_field(fields, words):
    with pytest.raises(ValueError) as error:
        PPOConfig(env="Pendulum-v1", **fields)
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message


@pytest.mark.parametrize("fields, env, words", [
    (dict(distribution="tanh_gaussian"), "CartPole-v1", ["distribution='tanh_gaussian'", "2 discrete", "categorical"]),
    (dict(distribution="categorical"), "Pendulum-v1", ["distribution='categorical'", "continuous", "gaussian"]),
    (dict(scale_fn="softplus"), "CartPole-v1", ["scale_fn='softplus'", "continuous action spaces"]),
    (dict(init_scale=0.5), "CartPole-v1", ["init_scale=0.5", "continuous action spaces"]),
])
def test_options_that_do_not_fit_the_action_space_are_refused(fields, env, words):
    with pytest.raises(ValueError) as error:
        make_agent(PPOConfig(env=env, **fields))
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message


# ------------------------------------------------------------------------------------------ learning probes
PROBE_OPTIONS = [  # every pair of option values appears in some row (distribution x scale_type x scale_fn)
    dict(distribution="gaussian", scale_type="state_independent", scale_fn="exp"),
    dict(distribution="gaussian", scale_type="state_dependent", scale_fn="softplus", min_scale=0.001),
    dict(distribution="tanh_gaussian", scale_type="state_independent", scale_fn="softplus", min_scale=0.001),
    dict(distribution="tanh_gaussian", scale_type="state_dependent", scale_fn="exp", init_scale=0.5),
]


@pytest.mark.parametrize("options", PROBE_OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_continuous_probe_is_solved_with_every_distribution_option(options):
    # Targets 2.5 (obs +1) and -0.5 (obs -1) in the action range [-1, 3]; the untrained greedy action is the
    # centre, 1.5 from both. 60 updates of 32 envs x 16 one-step episodes; over 4 other seeds every option ended
    # within 0.17 of both targets (the slowest: a state-independent softplus scale under tanh, 0.14-0.17).
    env = probe_envs.ContinuousTarget()
    config = PPOConfig(**{**helpers.PROBE, "num_envs": 32, "total_timesteps": 32 * 16 * 60, "ent_coef": 0.0,
                          **options})
    state, _ = jax.jit(jaxppo.make_train(config, env=env, env_params=env.default_params))(jax.random.key(0))
    act = jaxppo.make_policy(config, env=env, env_params=env.default_params)
    greedy = np.asarray(act(state.params, jnp.array([[1.0], [-1.0]]))).ravel()
    np.testing.assert_allclose(greedy, [2.5, -0.5], atol=0.25)


# ------------------------------------------------------------------------------------- checkpoints and load
def test_run_folder_checkpoint_and_load_carry_the_distribution_choice(tmp_path):
    from jaxppo.checkpoint import CheckpointStore
    from jaxppo.runner import ChunkedRun, RunOptions, train_run

    choice = dict(distribution="tanh_gaussian", scale_type="state_dependent", scale_fn="softplus", min_scale=0.01,
                  init_scale=0.4, actor_hidden_sizes=(16,), critic_hidden_sizes=(32, 32), head_hidden_sizes=(8,))
    config = PPOConfig(env="Pendulum-v1", num_envs=4, num_steps=16, num_minibatches=2, total_timesteps=4 * 16 * 2,
                       **choice)
    run_dir = tmp_path / "run"
    train_run(config, run_dir, RunOptions(checkpoint_every=1), quiet=True)
    saved = json.loads((run_dir / "config.json").read_text())
    assert {k: saved[k] for k in choice} == {**choice, "actor_hidden_sizes": [16], "critic_hidden_sizes": [32, 32],
                                             "head_hidden_sizes": [8]}
    run = jaxppo.load(run_dir)
    assert run.config == config
    # The loaded act() squashes: greedy actions are 2 tanh(mean) of the saved network (Pendulum's range is +-2),
    # where a Gaussian policy would send clip(mean, -2, 2).
    obs = jax.random.normal(jax.random.key(2), (5, 3)) * 3.0
    agent = make_agent(config)
    _, (mean, _), _ = agent.network.apply(run.params, (), obs[None], jnp.zeros((1, 5), bool))
    np.testing.assert_allclose(np.asarray(run.act(obs)), 2.0 * np.tanh(np.asarray(mean[0])), rtol=1e-5, atol=1e-6)
    # A checkpoint of this run is refused by a store for another distribution, naming the field.
    other = PPOConfig(**{**dataclasses.asdict(config), "distribution": "gaussian"})
    store = CheckpointStore(run_dir / "checkpoints", other)
    with pytest.raises(ValueError) as refused:
        store.restore(store.latest_step(), ChunkedRun(other, 1, 1).init(jax.random.key(0)[None]))
    store.close()
    assert "distribution" in str(refused.value) and "'tanh_gaussian'" in str(refused.value), refused.value
    identity = set(fields_with(PPOConfig, IDENTITY))
    assert {"distribution", "scale_type", "scale_fn", "actor_hidden_sizes", "critic_hidden_sizes",
            "head_hidden_sizes"} <= identity
