"""Action distributions: categorical (with legal-action masks) and diagonal Gaussian, against hand-worked numbers."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxppo.distributions import Categorical, DiagGaussian

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
