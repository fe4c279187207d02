"""Environment suites behind the adapter protocol (jaxppo/envs/{brax,jumanji,craftax}_env.py).

Per adapter: observations, rewards, terminated / truncated and final observations against a hand-rolled loop over
the suite's own API, auto-reset exactly at episode ends, time limits as truncation. Per suite: a short training
(Craftax's through the CLI, with checkpoints). On Jumanji, the cheapest to compile: vmap over seeds and
hyperparameters (a sweep), D devices == 1 device, evaluation with masks and normaliser statistics, a checkpoint round
trip. Compilation dominates the run time (a training program takes 5-25 s to compile on 2 CPU cores), so each suite
is compiled as few times as the checks allow, on a cheap environment: Brax's inverted_pendulum on the 'generalized'
pipeline (not 'mjx').
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxppo
from jaxppo import cli
from jaxppo.envs import make_env

ROOT = Path(__file__).resolve().parents[1]


def _needs(package: str):
    return pytest.mark.skipif(importlib.util.find_spec(package) is None,
                              reason=f"{package} is not installed: pip install -e '.[{package}]'")


needs_brax, needs_jumanji, needs_craftax = _needs("brax"), _needs("jumanji"), _needs("craftax")


def _mean(values) -> float:
    return float(np.nanmean(np.asarray(values, np.float64)))


# ------------------------------------------------------------------------------------------------------- ids
@needs_brax
def test_brax_envs_without_a_physics_pipeline_work():
    # brax's registered 'fast' test env never sets up a pipeline: it must reset and step like any other.
    env = make_env("brax/fast")
    assert env.backend is None and env.spec.obs_shape == (2,)
    state, obs, _ = env.reset(jax.random.key(0))
    state, step = env.step(jax.random.key(1), state, jnp.zeros(env.spec.action_shape))
    assert obs.shape == (2,) and step.obs.shape == (2,) and bool(jnp.isfinite(step.reward))


@needs_brax
@needs_jumanji
@needs_craftax
def test_ids_resolve_case_insensitively_and_unknown_ones_name_close_matches():
    assert make_env("brax/inverted_pendulum@spring").backend == "spring"
    assert make_env("brax/inverted_pendulum").backend == "generalized"  # the environment class's default
    assert make_env("jumanji/snake-v1").name == "Snake-v1"
    assert make_env("craftax/craftax-classic-symbolic-v1").spec.obs_shape == (1345,)
    with pytest.raises(ValueError, match=r"^env='brax/antt': not a registered brax environment; did you mean ant"):
        make_env("brax/antt")
    with pytest.raises(ValueError, match=r"^env='brax/ant@warp': unknown brax backend 'warp'; use one of "):
        make_env("brax/ant@warp")
    with pytest.raises(ValueError, match=r"^env='jumanji/Snak-v1': .*did you mean Snake-v1"):
        make_env("jumanji/Snak-v1")
    with pytest.raises(ValueError, match=r"^env='craftax/Craftax-Classic-v1': .*did you mean Craftax-Classic"):
        make_env("craftax/Craftax-Classic-v1")
    with pytest.raises(ValueError, match=r"^env='jumanji/JobShop-v0': its 10-dimensional action .* joint actions"):
        make_env("jumanji/JobShop-v0")


def test_missing_extra_is_one_line_through_the_public_api(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "craftax" else real(name, *a))
    with pytest.raises(ValueError) as error:
        jaxppo.make_train(jaxppo.PPOConfig(env="craftax/Craftax-Classic-Symbolic-v1"))
    assert str(error.value).splitlines() == [
        ("env='craftax/Craftax-Classic-Symbolic-v1': the craftax package is not installed; pip install -e "
         "\".[craftax]\" (or pip install -e \".[envs]\" for every suite)")]


def test_importing_jaxppo_and_gymnax_envs_imports_no_suite():
    code = ("import sys, jaxppo; from jaxppo.envs import make_env; make_env('CartPole-v1'); "
            "print(sorted(m for m in ('brax', 'jumanji', 'craftax', 'mujoco') if m in sys.modules))")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------------------------------------------- Brax
BRAX_ENV, BRAX_BACKEND = "inverted_pendulum", "generalized"


@needs_brax
def test_brax_adapter_matches_brax_episode_wrapper_loop():
    """Against brax.envs.create(..., auto_reset=False): brax's EpisodeWrapper, reset by hand where done."""
    from brax import envs

    from jaxppo.envs.brax_env import BraxEnv

    limit = 5  # short, so that episodes end both ways: the pole falls (terminated) or time runs out (truncated)
    adapter = BraxEnv(BRAX_ENV, BRAX_BACKEND, episode_length=limit)
    reference = envs.create(BRAX_ENV, episode_length=limit, auto_reset=False, backend=BRAX_BACKEND)
    assert adapter.spec.obs_shape == (4,) and adapter.spec.action_shape == (1,)
    assert adapter.spec.continuous and adapter.spec.max_episode_steps == limit
    ad_reset, ad_step = jax.jit(adapter.reset), jax.jit(adapter.step)
    ref_reset, ref_step = jax.jit(reference.reset), jax.jit(reference.step)

    key = jax.random.key(3)
    state, obs, mask = ad_reset(key)
    ref = ref_reset(jax.random.key_data(key))
    assert mask is None and obs.dtype == jnp.float32
    np.testing.assert_array_equal(obs, ref.obs)
    ends, length = [], 0
    for t in range(40):
        step_key = jax.random.fold_in(key, t)
        action = jax.random.uniform(jax.random.fold_in(step_key, 1), (1,), minval=-1.0, maxval=1.0)
        state, step = ad_step(step_key, state, action)
        ref = ref_step(ref, action)
        length += 1
        np.testing.assert_allclose(step.final_obs, ref.obs, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(step.reward, ref.reward, rtol=1e-6, atol=1e-6)
        done, cut = bool(ref.done), bool(ref.info["truncation"])
        assert (bool(step.terminated), bool(step.truncated)) == (done and not cut, cut), t
        if done:  # the reset happens exactly here, with the step's key
            ends.append(("truncated" if cut else "terminated", length))
            assert not cut or length == limit
            ref, length = ref_reset(jax.random.key_data(step_key)), 0
        np.testing.assert_allclose(step.obs, ref.obs, rtol=1e-6, atol=1e-6)
        assert bool(np.array_equal(step.obs, step.final_obs)) != done
    kinds = {kind for kind, _ in ends}
    assert kinds == {"terminated", "truncated"}, ends


@needs_brax
@pytest.mark.slow
def test_brax_short_training_with_observation_normalisation_improves():
    config = jaxppo.PPOConfig(env=f"brax/{BRAX_ENV}@{BRAX_BACKEND}", num_envs=16, num_steps=32,
                              total_timesteps=16 * 32 * 20, num_minibatches=4, normalize_observations=True)
    state, metrics = jax.jit(jaxppo.make_train(config))(jax.random.key(0))
    returns = np.asarray(metrics.episode_return)
    # A random policy keeps the pole up ~5 steps (reward 1 per step); 10k steps of PPO several times that.
    assert _mean(returns[:3]) < 8 and _mean(returns[-3:]) > 2 * _mean(returns[:3]), returns
    assert float(state.normalizers.obs.count) > 16 * 32 * 19  # statistics of every rollout (the count is per obs)
    assert np.all(np.isfinite(np.asarray(metrics.loss.total_loss)))


# ------------------------------------------------------------------------------------------------- Jumanji
def _jumanji_reference_obs(observation) -> tuple[np.ndarray, np.ndarray]:
    """Independent flattening of a Jumanji observation: every field but action_mask, in field order."""
    parts = [np.asarray(leaf, np.float32).ravel() for name in observation._fields if name != "action_mask"
             for leaf in jax.tree.leaves(getattr(observation, name))]
    return np.concatenate(parts), np.asarray(observation.action_mask)


def _jumanji_cases():
    import jumanji

    # LevelBasedForaging: two agents (joint action 6 x 6, one mask row per agent, rewards summed) and a time limit
    # that jumanji ends with types.truncation (discount 1). Knapsack: one plain mask; the episode ends with
    # types.termination (discount 0) once no item fits.
    return [("LevelBasedForaging-v0", jumanji.make("LevelBasedForaging-v0", time_limit=6), "truncated"),
            ("Knapsack-v1", jumanji.make("Knapsack-v1"), "terminated")]


@needs_jumanji
@pytest.mark.parametrize("case", [0, 1], ids=["lbf", "knapsack"])
def test_jumanji_adapter_matches_hand_rolled_loop(case):
    from jaxppo.envs.jumanji_env import JumanjiEnv

    name, env, expected_end = _jumanji_cases()[case]
    adapter = JumanjiEnv(env, name)
    spec = env.action_spec
    nvec = tuple(int(n) for n in np.atleast_1d(np.asarray(spec.num_values)))
    assert adapter.spec.num_actions == int(np.prod(nvec)) and adapter.spec.has_action_mask
    ad_reset, ad_step = jax.jit(adapter.reset), jax.jit(adapter.step)
    ref_reset, ref_step = jax.jit(env.reset), jax.jit(env.step)

    def joint_mask(mask: np.ndarray) -> np.ndarray:
        if mask.shape == nvec:
            return mask.ravel()
        joint = mask[0]
        for row in mask[1:]:
            joint = np.logical_and.outer(joint, row)
        return joint.ravel()

    key = jax.random.key(7)
    state, obs, mask = ad_reset(key)
    ref_state, ref = ref_reset(jax.random.key_data(key))
    ref_obs, ref_mask = _jumanji_reference_obs(ref.observation)
    np.testing.assert_array_equal(obs, ref_obs)
    np.testing.assert_array_equal(mask, joint_mask(ref_mask))
    rng = np.random.default_rng(0)
    ends, length = [], 0
    for t in range(60):
        action = int(rng.choice(np.flatnonzero(np.asarray(mask))))  # a legal joint action
        env_action = np.asarray(np.unravel_index(action, nvec)).reshape(spec.shape).astype(spec.dtype)
        step_key = jax.random.fold_in(key, t)
        state, step = ad_step(step_key, state, jnp.int32(action))
        ref_state, ref = ref_step(ref_state, env_action)
        length += 1
        reached_obs, reached_mask = _jumanji_reference_obs(ref.observation)
        np.testing.assert_array_equal(step.final_obs, reached_obs)
        np.testing.assert_allclose(step.reward, np.sum(ref.reward), rtol=1e-6)
        last, discount = bool(ref.last()), float(np.max(ref.discount))
        assert (bool(step.terminated), bool(step.truncated)) == (last and discount == 0, last and discount > 0), t
        if last:
            ends.append(("terminated" if discount == 0 else "truncated", length))
            ref_state, ref = ref_reset(jax.random.key_data(step_key))
            reached_obs, reached_mask = _jumanji_reference_obs(ref.observation)
            length = 0
        np.testing.assert_array_equal(step.obs, reached_obs)  # auto-reset exactly where the episode ended
        np.testing.assert_array_equal(step.action_mask, joint_mask(reached_mask))
        mask = step.action_mask
    assert ends and {kind for kind, _ in ends} == {expected_end}, ends
    if expected_end == "truncated":
        assert {n for _, n in ends} == {6}  # every episode cut at the time limit


@pytest.fixture(scope="module")
def small_knapsack_id():
    """A registered 10-item Knapsack (budget 2.5): the same task as Knapsack-v1, small enough to learn in seconds."""
    jumanji = pytest.importorskip("jumanji")
    from jumanji.environments.packing.knapsack.generator import RandomGenerator

    env_id = "Knapsack10-v0"
    if env_id not in jumanji.registered_environments():
        jumanji.register(env_id, "jumanji.environments:Knapsack",
                         kwargs={"generator": RandomGenerator(num_items=10, total_budget=2.5)})
    return f"jumanji/{env_id}"


@needs_jumanji
@pytest.mark.slow
def test_jumanji_sweep_over_seeds_and_learning_rates_improves_on_random(small_knapsack_id):
    from jaxppo.sweep import run_sweep

    config = jaxppo.PPOConfig(env=small_knapsack_id, num_envs=16, num_steps=16, total_timesteps=16 * 16 * 60,
                              num_minibatches=4, ent_coef=0.0, anneal_lr=False)
    result = run_sweep(config, grid={"lr": [3e-3, 5e-3]}, num_seeds=2, seed=0)  # one program: vmap x vmap
    curves = np.asarray(result.episode_return)  # [settings, seeds, updates]
    assert curves.shape == (2, 2, 60)
    first, last = np.nanmean(curves[..., :3], axis=-1), np.nanmean(curves[..., -3:], axis=-1)
    # Masked random packing collects ~2.8 (about 50 episodes per update, so the first-3 mean is within ~0.1); the
    # policy learns to prefer valuable items.
    assert np.all(first < 3.1) and np.all(last > first + 0.3), (first, last)


@pytest.fixture(scope="module")
def knapsack_runs():
    """Knapsack-v1, two updates, on one device and on two (observation normalisation on)."""
    pytest.importorskip("jumanji")
    fields = dict(env="jumanji/Knapsack-v1", num_envs=8, num_steps=16, total_timesteps=8 * 16 * 2,
                  num_minibatches=4, normalize_observations=True)
    one = jax.jit(jaxppo.make_train(jaxppo.PPOConfig(**fields)))(jax.random.key(1))
    two = jax.jit(jaxppo.make_train(jaxppo.PPOConfig(**fields, num_devices=2)))(jax.random.key(1))
    return jaxppo.PPOConfig(**fields), one, two


@needs_jumanji
def test_jumanji_two_devices_equal_one_device(knapsack_runs):
    _, (state, metrics), (state2, metrics2) = knapsack_runs
    chex.assert_trees_all_close(state2.params, state.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(state2.env.obs, state.env.obs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(state2.env.action_mask, state.env.action_mask)
    np.testing.assert_allclose(metrics2.episode_return, metrics.episode_return, rtol=1e-5)


@needs_jumanji
def test_jumanji_evaluation_respects_masks_and_normalisers(knapsack_runs):
    config, (state, _), _ = knapsack_runs
    result = jaxppo.evaluate_policy(config, state.params, jax.random.key(2), num_episodes=8,
                                    normalizers=state.normalizers)
    lengths, returns = np.asarray(result.lengths), np.asarray(result.returns)
    # Masked actions only: every pick fits and is new, so an episode packs items until none fits (>= 12 of the 50
    # items, each weighing at most 1, before the 12.5 budget can be exceeded) and earns their values.
    assert np.all(lengths >= 12) and np.all(lengths <= 50)
    assert np.all(returns > 0)


@needs_jumanji
def test_jumanji_train_state_checkpoint_round_trip(knapsack_runs, tmp_path):
    from jaxppo.checkpoint import CheckpointStore

    config, (state, _), _ = knapsack_runs
    assert state.env.env_state.key.dtype == jnp.uint32  # suite keys are kept as plain key data
    store = CheckpointStore(tmp_path / "checkpoints", config)
    store.save(2, state, {})
    restored = store.restore_latest(state)  # the template gives structure and shapes; values come from disk
    store.close()
    assert restored.step == 2
    chex.assert_trees_all_equal(jax.random.key_data(restored.state.key), jax.random.key_data(state.key))
    chex.assert_trees_all_equal(restored.state.replace(key=None), state.replace(key=None))


# -------------------------------------------------------------------------------------------------- Craftax
@needs_craftax
@pytest.mark.slow
def test_craftax_adapter_matches_hand_rolled_loop_and_time_limit_is_truncation():
    from craftax.craftax_env import make_craftax_env_from_name

    from jaxppo.envs.craftax_env import CraftaxEnv

    env = make_craftax_env_from_name("Craftax-Classic-Symbolic-v1", auto_reset=False)
    limit = 6
    params = env.default_params.replace(max_timesteps=limit)
    adapter = CraftaxEnv(env, params)
    assert adapter.spec.max_episode_steps == limit and adapter.spec.num_actions == 17
    # The adapter runs eagerly: it then calls the very step and reset programs Craftax compiles (its env.step and
    # env.reset are jitted), which the reference loop reuses, so each is compiled once.
    ad_reset, ad_step = adapter.reset, adapter.step

    def kill(state):  # health 0 and no recovery pending: the next step ends the episode by death
        return state.replace(player_health=jnp.zeros_like(state.player_health),
                             player_recover=jnp.zeros_like(state.player_recover))

    key = jax.random.key(11)
    state, obs, mask = ad_reset(key)
    ref_obs, ref_state = env.reset(jax.random.key_data(key), params)
    assert mask is None
    np.testing.assert_array_equal(obs, ref_obs)
    ends, length = [], 0
    # Deaths are forced on the 3rd step of the first episode and on the 6th (last allowed) step of the third.
    for t in range(15):
        if t in (2, 14):
            state, ref_state = kill(state), kill(ref_state)
        step_key = jax.random.fold_in(key, t)
        action = jnp.int32(t % 17)
        state, step = ad_step(step_key, state, action)
        key_step, key_reset = jax.random.split(jax.random.key_data(step_key))  # Craftax's own auto-reset split
        reached_obs, ref_state, reward, done, _ = env.step(key_step, ref_state, action, params)
        length += 1
        np.testing.assert_array_equal(step.final_obs, reached_obs)
        np.testing.assert_allclose(step.reward, reward, rtol=1e-6)
        dead = bool(ref_state.player_health <= 0)
        assert (bool(step.terminated), bool(step.truncated)) == (bool(done) and dead, bool(done) and not dead), t
        if bool(done):
            ends.append(("terminated" if dead else "truncated", length))
            reached_obs, ref_state = env.reset(key_reset, params)
            length = 0
        np.testing.assert_array_equal(step.obs, reached_obs)
    assert ends == [("terminated", 3), ("truncated", 6), ("terminated", 6)]


@needs_craftax
@pytest.mark.slow
def test_cli_trains_craftax_with_checkpoints_and_records_returns(tmp_path, capsys):
    """A few thousand steps do not improve Craftax-Classic measurably (the paper's PPO trains for 1e9), so this
    checks what such a run can show: through the CLI, episodes end and their returns (achievements unlocked, +-0.1
    per health point) are recorded, losses stay finite, and checkpoints of the Craftax state are written."""
    from jaxppo import outputs

    run = tmp_path / "run"
    assert cli.main(["train", "--env", "craftax/Craftax-Classic-Symbolic-v1", "--num-envs", "8", "--num-steps", "32",
                     "--num-minibatches", "4", "--total-timesteps", str(8 * 32 * 6), "--hidden-sizes", "64", "64",
                     "--checkpoint-every", "3", "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    columns = outputs.read_metrics_csv(run / "metrics.csv")
    returns = columns["episode_return"][0]
    assert np.isfinite(returns).any(), returns  # random play dies within a few hundred steps
    assert np.all((returns[np.isfinite(returns)] > -1.5) & (returns[np.isfinite(returns)] < 22.0))
    assert np.all(np.isfinite(columns["total_loss"]))
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["3", "6"]
    assert json.loads((run / "summary.json").read_text())["env"] == "craftax/Craftax-Classic-Symbolic-v1"
