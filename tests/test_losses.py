"""PPO loss terms: hand-worked numbers, gradients through the clip, and ppo_loss against a NumPy reference."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxppo.agent import make_agent
from jaxppo.config import HParams, PPOConfig
from jaxppo.losses import LossInputs, clipped_surrogate_loss, ppo_loss, value_loss
from jaxppo.networks import init_params
from jaxppo.update import make_layout, make_replay

# ------------------------------------------------------------------------------------------ clipped surrogate
# Five samples, clip_eps = 0.2, log ratio d = log pi - log pi_old:
#   0: d =  0.1, A =  2  inside:            r = exp(0.1)  = 1.105171, loss_0 = -2 * 1.105171 = -2.210342
#   1: d =  0.5, A =  1  above, A > 0:      r = exp(0.5)  = 1.648721, max(-1.648721, -1 * 1.2) = -1.2     (clipped)
#   2: d = -0.5, A = -1  below, A < 0:      r = exp(-0.5) = 0.606531, max(0.606531, 1 * 0.8)   =  0.8     (clipped)
#   3: d =  0.5, A = -1  above, A < 0:      r = 1.648721,             max(1.648721, 1 * 1.2)    =  1.648721
#   4: d = -0.5, A =  1  below, A > 0:      r = 0.606531,             max(-0.606531, -1 * 0.8)  = -0.606531
# loss = (-2.210342 - 1.2 + 0.8 + 1.648721 - 0.606531) / 5 = -1.568152 / 5 = -0.3136304
# d loss / d log pi_i = -A_i r_i / 5 on the unclipped side, 0 on the clipped side:
#   [-2*1.105171/5, 0, 0, 1.648721/5, -0.606531/5] = [-0.4420684, 0, 0, 0.3297443, -0.1213061]
OLD_LOG_PROBS = jnp.array([-1.0, -0.7, -1.2, -0.3, -2.0])
LOG_RATIO = jnp.array([0.1, 0.5, -0.5, 0.5, -0.5])
SURROGATE_ADV = jnp.array([2.0, 1.0, -1.0, -1.0, 1.0])


def _surrogate(log_probs):
    return clipped_surrogate_loss(log_probs, OLD_LOG_PROBS, SURROGATE_ADV, 0.2)


def test_clipped_surrogate_loss_and_ratio():
    loss, ratio = _surrogate(OLD_LOG_PROBS + LOG_RATIO)
    chex.assert_trees_all_close(ratio, jnp.array([1.105171, 1.648721, 0.606531, 1.648721, 0.606531]), rtol=1e-5)
    np.testing.assert_allclose(float(loss), -0.3136304, rtol=1e-5)


def test_clipped_surrogate_gradient_is_zero_exactly_where_clipped():
    grad = jax.grad(lambda lp: _surrogate(lp)[0])(OLD_LOG_PROBS + LOG_RATIO)
    chex.assert_trees_all_close(grad, jnp.array([-0.4420684, 0.0, 0.0, 0.3297443, -0.1213061]), rtol=1e-5)
    # Clipped samples carry no gradient at all, not merely a small one.
    assert float(grad[1]) == 0.0 and float(grad[2]) == 0.0


def test_clipped_surrogate_single_sample_inside_the_range():
    # r = exp(0.1) = 1.105171, A = 3: loss = -3 * 1.105171 = -3.315513
    loss, _ = clipped_surrogate_loss(jnp.array([0.1]), jnp.array([0.0]), jnp.array([3.0]), 0.2)
    np.testing.assert_allclose(float(loss), -3.315513, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ value loss
# clip_eps = 0.2
#   0: V = 1.0, V_old = 0.9, R =  1.5: (V-R)^2 = 0.25; V - V_old = 0.1 inside  -> V_c = 1.0, (V_c-R)^2 = 0.25; max 0.25
#   1: V = 2.0, V_old = 1.5, R =  1.0: (V-R)^2 = 1.00; V - V_old = 0.5 -> 0.2  -> V_c = 1.7, (V_c-R)^2 = 0.49; max 1.00
#   2: V = 0.0, V_old = 0.5, R = -0.1: (V-R)^2 = 0.01; V - V_old = -0.5 -> -0.2 -> V_c = 0.3, (V_c-R)^2 = 0.16; max 0.16
# unclipped loss = 0.5 * (0.25 + 1.00 + 0.01) / 3 = 0.21
# clipped loss   = 0.5 * (0.25 + 1.00 + 0.16) / 3 = 0.235   (sample 2: the clipped term is the larger one)
VALUES = jnp.array([1.0, 2.0, 0.0])
OLD_VALUES = jnp.array([0.9, 1.5, 0.5])
RETURNS = jnp.array([1.5, 1.0, -0.1])


@pytest.mark.parametrize("clip, expected", [(False, 0.21), (True, 0.235)])
def test_value_loss(clip, expected):
    np.testing.assert_allclose(float(value_loss(VALUES, OLD_VALUES, RETURNS, 0.2, clip)), expected, rtol=1e-5)


def test_clipped_value_loss_gradient():
    grad = jax.grad(lambda v: value_loss(v, OLD_VALUES, RETURNS, 0.2, True))(VALUES)
    # d/dV of 0.5 * mean(...): (V - R) / 3 where the unclipped term is in force, 0 where the clipped (saturated)
    # term wins: [-0.5/3, 1.0/3, 0] = [-0.1666667, 0.3333333, 0]
    chex.assert_trees_all_close(grad, jnp.array([-0.1666667, 0.3333333, 0.0]), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------------- ppo_loss
N = 16


@pytest.fixture(scope="module")
def cartpole():
    agent = make_agent(PPOConfig())
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    # The policy head starts at scale 0.01 (logits ~ 0); scale it up so log-probs and entropy are far from uniform.
    head = params["params"]["actor_head"]
    params = {"params": {**params["params"], "actor_head": {**head, "kernel": head["kernel"] * 200.0}}}
    obs = jax.random.normal(jax.random.key(1), (N, 4)) * 2.0
    _, logits, values = agent.network.apply(params, (), obs[None], jnp.zeros((1, N), bool))
    return agent, params, obs, np.asarray(logits[0], np.float64), np.asarray(values[0], np.float64)


def _np_log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _np_ppo_loss(logits, values, batch, clip_eps, vf_clip_eps, ent_coef, vf_coef, normalize_adv, clip_value):
    """Per-sample loop, float64."""
    log_p_all = _np_log_softmax(logits)
    actions = np.asarray(batch.actions)
    old_lp = np.asarray(batch.old_log_probs, np.float64)
    old_v = np.asarray(batch.old_values, np.float64)
    ret = np.asarray(batch.returns, np.float64)
    adv = np.asarray(batch.advantages, np.float64)
    if normalize_adv:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg, vl, ent, kl, clipped = [], [], [], [], []
    for i in range(len(actions)):
        log_ratio = log_p_all[i, actions[i]] - old_lp[i]
        r = np.exp(log_ratio)
        pg.append(max(-adv[i] * r, -adv[i] * min(max(r, 1 - clip_eps), 1 + clip_eps)))
        err = (values[i] - ret[i]) ** 2
        if clip_value:
            v_c = old_v[i] + min(max(values[i] - old_v[i], -vf_clip_eps), vf_clip_eps)
            err = max(err, (v_c - ret[i]) ** 2)
        vl.append(0.5 * err)
        ent.append(-np.sum(np.exp(log_p_all[i]) * log_p_all[i]))
        kl.append((r - 1) - log_ratio)
        clipped.append(abs(r - 1) > clip_eps)
    pg, vl, ent = np.mean(pg), np.mean(vl), np.mean(ent)
    return dict(total_loss=pg + vf_coef * vl - ent_coef * ent, policy_loss=pg, value_loss=vl, entropy=ent,
                approx_kl=np.mean(kl), clip_fraction=np.mean(clipped))


def _batch(obs, logits, values, log_ratio_scale, seed):
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 2, size=N)
    log_probs = _np_log_softmax(logits)[np.arange(N), actions]
    return LossInputs(
        obs=obs, first=jnp.zeros((N,), bool), action_mask=None, memory=(),
        actions=jnp.asarray(actions, jnp.int32),
        old_log_probs=jnp.asarray(log_probs - rng.normal(scale=log_ratio_scale, size=N), jnp.float32),
        old_values=jnp.asarray(values + rng.normal(scale=0.5, size=N), jnp.float32),
        advantages=jnp.asarray(rng.normal(1.0, 2.0, size=N), jnp.float32),
        returns=jnp.asarray(values + rng.normal(scale=1.0, size=N), jnp.float32),
    )


@pytest.mark.parametrize("normalize_adv, clip_value", [(True, True), (False, False)])
def test_ppo_loss_matches_numpy(cartpole, normalize_adv, clip_value):
    agent, params, obs, logits, values = cartpole
    batch = _batch(obs, logits, values, log_ratio_scale=0.3, seed=2)
    coefs = dict(clip_eps=0.2, vf_clip_eps=0.3, ent_coef=0.05, vf_coef=0.7)
    config = PPOConfig(clip_value_loss=clip_value, normalize_advantages=normalize_adv)
    hp = HParams.from_config(config).replace(**coefs)
    # The update normalises advantages before the loss (with global minibatch statistics); do the same here.
    adv = np.asarray(batch.advantages)
    given = batch._replace(advantages=jnp.asarray((adv - adv.mean()) / (adv.std() + 1e-8))) if normalize_adv else batch
    loss, metrics = ppo_loss(params, given, hp, config, make_replay(agent, make_layout(agent.config)))
    expected = _np_ppo_loss(logits, values, batch, **coefs, normalize_adv=normalize_adv, clip_value=clip_value)
    # The batch really exercises the clip: some samples inside, some outside the range; policy not uniform.
    assert 0.2 < expected["clip_fraction"] < 0.8
    assert expected["entropy"] < 0.95 * np.log(2.0)
    np.testing.assert_allclose(float(loss), expected["total_loss"], rtol=1e-4, atol=1e-5)
    for name, value in expected.items():
        np.testing.assert_allclose(float(getattr(metrics, name)), value, rtol=1e-4, atol=1e-5, err_msg=name)
    # total = pg + vf_coef * vl - ent_coef * entropy, from the returned metrics themselves.
    np.testing.assert_allclose(
        float(metrics.total_loss),
        float(metrics.policy_loss + 0.7 * metrics.value_loss - 0.05 * metrics.entropy), rtol=1e-6)


def test_ppo_loss_on_policy_batch_has_unit_ratio(cartpole):
    agent, params, obs, logits, values = cartpole
    batch = _batch(obs, logits, values, log_ratio_scale=0.0, seed=3)
    config = PPOConfig(ent_coef=0.0)
    _, metrics = ppo_loss(params, batch, HParams.from_config(config), config, make_replay(agent, make_layout(agent.config)))
    # r = 1 everywhere: approx_kl = (1 - 1) - log 1 = 0, nothing clipped, policy loss = -mean(A).
    np.testing.assert_allclose(float(metrics.approx_kl), 0.0, atol=1e-6)
    assert float(metrics.clip_fraction) == 0.0
    np.testing.assert_allclose(float(metrics.policy_loss), -float(jnp.mean(batch.advantages)), rtol=1e-5)


def test_value_clip_range_follows_clip_eps_on_every_path(cartpole):
    # vf_clip_eps=None means "follow clip_eps": the same whether clip_eps is changed in the config or in HParams.
    agent, params, obs, logits, values = cartpole
    batch = _batch(obs, logits, values, log_ratio_scale=0.3, seed=4)
    evaluate = make_replay(agent, make_layout(agent.config))
    base = PPOConfig(normalize_advantages=False)
    via_config = ppo_loss(params, batch, HParams.from_config(PPOConfig(normalize_advantages=False, clip_eps=0.05)),
                          base, evaluate)[1]
    via_hparams = ppo_loss(params, batch, HParams.from_config(base).replace(clip_eps=0.05), base, evaluate)[1]
    explicit = ppo_loss(params, batch, HParams.from_config(base).replace(clip_eps=0.05, vf_clip_eps=0.05), base,
                        evaluate)[1]
    other = ppo_loss(params, batch, HParams.from_config(base).replace(clip_eps=0.05, vf_clip_eps=0.5), base,
                     evaluate)[1]
    np.testing.assert_allclose(float(via_config.value_loss), float(via_hparams.value_loss), rtol=1e-6)
    np.testing.assert_allclose(float(via_hparams.value_loss), float(explicit.value_loss), rtol=1e-6)
    assert abs(float(other.value_loss) - float(explicit.value_loss)) > 1e-3  # the clip range matters here
