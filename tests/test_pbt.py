"""Population-based training: exploit copies exactly the chosen members' learning state, explore stays in range,
non-finite members are replaced, decisions are deterministic and independent of how the run is chunked."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxppo
from jaxppo.pbt import (ExploreRange, PBTConfig, exploit_explore, explore, make_population_chunk, member_fitness,
                        sample_hparams)
from jaxppo.train import default_hparams, make_train_parts

CONFIG = jaxppo.PPOConfig(env="CartPole-v1", num_envs=4, num_steps=8, num_minibatches=2, total_timesteps=4 * 8 * 8)
EXPLORE = (ExploreRange("lr", 1e-4, 1e-2, "log"), ExploreRange("clip_eps", 0.1, 0.3, "linear"))


@pytest.fixture(scope="module")
def population():
    """Four members (seeds 0-3) after two updates each, with different learning rates."""
    parts = make_train_parts(CONFIG)
    hp = jaxppo.stack_hparams([default_hparams(CONFIG).replace(lr=lr) for lr in (1e-3, 2e-3, 3e-3, 4e-3)])
    keys = jax.vmap(jax.random.key)(jnp.arange(4))
    states = jax.jit(jax.vmap(parts.init))(keys, hp)
    states, _ = jax.jit(jax.vmap(lambda s: parts.run(s, 2)))(states)
    return parts, states


def _member(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def test_exploit_copies_exactly_the_learning_state_of_the_chosen_member(population):
    _, states = population
    pbt = PBTConfig(population=4, ready_updates=2, explore=EXPLORE, truncation=0.25)
    fitness = jnp.array([3.0, 1.0, 0.0, 2.0])  # member 2 is worst, member 0 best; one member is replaced
    new, record = jax.jit(lambda s: exploit_explore(s, fitness, pbt, jax.random.key(7)))(states)
    np.testing.assert_array_equal(record.parents, [0, 1, 0, 3])
    for i in (0, 1, 3):  # the others are untouched, every field
        chex.assert_trees_all_equal(_member(new, i), _member(states, i))
    copied, before, source = _member(new, 2), _member(states, 2), _member(states, 0)
    for field in ("params", "opt_state", "normalizers"):
        chex.assert_trees_all_equal(getattr(copied, field), getattr(source, field))
    for field in ("env", "key", "update_step"):  # the member keeps its own environments and randomness
        chex.assert_trees_all_equal(getattr(copied, field), getattr(before, field))
    explored = {item.name for item in EXPLORE}
    for name, value in copied.hparams.as_dict().items():
        if name not in explored:
            np.testing.assert_array_equal(value, getattr(source.hparams, name), err_msg=name)  # NaN == NaN here
    # lr came from member 0 (1e-3) and was perturbed (x0.8 / x1.25) or resampled inside the range.
    lr = float(copied.hparams.lr)
    assert 1e-4 <= lr <= 1e-2 and lr != pytest.approx(1e-3)
    np.testing.assert_allclose(record.hparams[:, 0], np.asarray(new.hparams.lr), rtol=1e-7)


def test_explore_perturbs_or_resamples_inside_the_range_and_only_the_replaced():
    pbt = PBTConfig(population=4, ready_updates=1, explore=EXPLORE, resample_probability=0.3)
    hp = jaxppo.stack_hparams([default_hparams(CONFIG).replace(lr=lr, clip_eps=0.3)
                               for lr in (1e-4, 1e-3, 9e-3, 1e-2)])
    replaced = jnp.array([True, True, True, False])
    perturbed = resampled = 0
    for seed in range(60):
        new = explore(hp, replaced, pbt, jax.random.key(seed))
        lr, clip = np.asarray(new.lr), np.asarray(new.clip_eps)
        assert np.all((lr >= 1e-4 * (1 - 1e-6)) & (lr <= 1e-2 * (1 + 1e-6)))
        assert np.all((clip >= 0.1 - 1e-7) & (clip <= 0.3 + 1e-7))
        assert lr[3] == np.float32(1e-2) and clip[3] == np.float32(0.3)  # not replaced: unchanged
        ratio = lr[1] / 1e-3
        if np.isclose(ratio, 0.8, rtol=1e-5) or np.isclose(ratio, 1.25, rtol=1e-5):
            perturbed += 1
        else:
            resampled += 1
    # 30% resampling: about 18 of 60 (binomial sd 3.5).
    assert 5 <= resampled <= 32 and perturbed >= 28


def test_non_finite_members_are_replaced_whatever_their_return(population):
    _, states = population
    poisoned = states.replace(params=jax.tree.map(lambda x: x.at[1].set(jnp.nan), states.params))
    pbt = PBTConfig(population=4, ready_updates=2, explore=EXPLORE)
    new, record = exploit_explore(poisoned, jnp.array([1.0, 100.0, 2.0, 3.0]), pbt, jax.random.key(0))
    assert int(record.parents[1]) in (3,) and float(record.fitness[1]) == -np.inf
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(new.params))


def test_fitness_is_the_windowed_mean_ignoring_updates_without_episodes():
    returns = jnp.array([[1.0, 2.0, 3.0, 5.0], [jnp.nan, jnp.nan, 4.0, jnp.nan], [jnp.nan] * 4])
    np.testing.assert_allclose(member_fitness(returns, 2), [4.0, 4.0, -np.inf])
    np.testing.assert_allclose(member_fitness(returns, 4), [2.75, 4.0, -np.inf])


def test_population_chunks_are_deterministic_and_independent_of_chunking(population):
    parts, _ = population
    pbt = PBTConfig(population=4, ready_updates=2, explore=EXPLORE, seed=3)
    keys = jax.vmap(jax.random.key)(jnp.arange(4))
    start = jax.jit(jax.vmap(parts.init, in_axes=(0, None)))(keys, default_hparams(CONFIG))
    start = start.replace(hparams=sample_hparams(start.hparams, pbt, jax.random.key(1)))
    four = jax.jit(make_population_chunk(parts.run, pbt, 4))
    two = jax.jit(make_population_chunk(parts.run, pbt, 2))
    whole, metrics, records = four(start, jnp.int32(4))
    half, m1, r1 = two(start, jnp.int32(2))
    half, m2, r2 = two(half, jnp.int32(2))
    chex.assert_trees_all_equal(whole, half)
    chex.assert_trees_all_equal(metrics, jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=1), m1, m2))
    np.testing.assert_array_equal(records.parents, np.concatenate([r1.parents, r2.parents]))
    assert metrics.episode_return.shape == (4, 4)
    # A step happened after each full period: one member replaced each time.
    assert all(int(np.sum(row != np.arange(4))) == 1 for row in np.asarray(records.parents))
    again, _, again_records = four(start, jnp.int32(4))
    chex.assert_trees_all_equal(again, whole)
    # A shorter last chunk runs its updates and skips the step of an incomplete period.
    _, partial_metrics, partial = four(start, jnp.int32(3))
    np.testing.assert_array_equal(partial.parents[1], np.arange(4))
    assert np.all(np.asarray(partial_metrics.update)[:, 3] == 0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(truncation=0.7), "truncation=0.7: must be in"),
    (dict(explore=(ExploreRange("lr", 1e-2, 1e-4),)), "explore 'lr': needs finite low < high"),
    (dict(explore=(ExploreRange("lr", 0.0, 1e-2, "log"),)), "low=0.0 must be > 0 on a log scale"),
    (dict(explore=(ExploreRange("learning_rate", 1e-4, 1e-2),)), "'learning_rate': not a traced hyperparameter"),
    (dict(fitness_window=20, ready_updates=10), "fitness_window=20: at most ready_updates=10"),
])
def test_pbt_settings_are_validated_with_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PBTConfig(**kwargs).validate(tuple(default_hparams(CONFIG).as_dict()))


# ---------------------------------------------------------------------------------------------- in a run folder
def _pbt_run(out, stop_after=None, num_devices=1, resume=False):
    from jaxppo import runner
    from jaxppo.population import Population

    if resume:
        return runner.resume_run(out, quiet=True)
    config = jaxppo.PPOConfig(env="CartPole-v1", num_envs=4, num_steps=8, num_minibatches=2,
                              total_timesteps=4 * 8 * 8, num_devices=num_devices)
    population = Population(pbt=PBTConfig(population=4, ready_updates=2, explore=EXPLORE, seed=5))
    options = runner.RunOptions(population=population.to_json(), checkpoint_every=2)
    return runner.train_run(config, out, options, stop_after_updates=stop_after, quiet=True)


@pytest.fixture(scope="module")
def pbt_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("pbt") / "run"
    return out, _pbt_run(out)


def test_a_pbt_run_folder_records_lineage_and_hyperparameters_consistently(pbt_folder):
    from jaxppo.population import read_hparams

    out, result = pbt_folder
    names, rows = read_hparams(out)
    assert names == ("lr", "clip_eps") and set(rows[:, 0]) == {0, 2, 4, 6, 8}
    lineage = np.loadtxt(out / "lineage.csv", delimiter=",", skiprows=1, ndmin=2)
    assert len(lineage) == 4 and set(lineage[:, 0]) == {2, 4, 6, 8}  # one member replaced per step
    by_update = {u: rows[rows[:, 0] == u][:, 2:] for u in set(rows[:, 0])}
    for update, member, parent, member_fitness, parent_fitness in lineage:
        assert parent_fitness >= member_fitness and member != parent
        # Each kept member's values carry over; the replaced one's come from its parent, perturbed or resampled.
        before, after = by_update[update - 2], by_update[update]
        kept = [m for m in range(4) if m != member]
        np.testing.assert_array_equal(after[kept], before[kept])
    # The final state's hyperparameters are the last rows, and the summary names the best member.
    final = np.stack([np.asarray(result.state.hparams.lr), np.asarray(result.state.hparams.clip_eps)], axis=1)
    np.testing.assert_allclose(by_update[8], final, rtol=1e-7)
    assert 0 <= result.summary["best_member"] < 4 and len(result.summary["members"]) == 4


def test_pbt_resumes_bitwise_mid_population(pbt_folder, tmp_path):
    out, whole = pbt_folder
    part = tmp_path / "part"
    first = _pbt_run(part, stop_after=4)
    assert not first.finished and first.updates_done == 4
    resumed = _pbt_run(part, resume=True)
    chex.assert_trees_all_equal(resumed.state.params, whole.state.params)
    chex.assert_trees_all_equal(resumed.state.hparams, whole.state.hparams)
    for name in ("lineage.csv", "hparams.csv", "metrics.csv"):
        assert (part / name).read_bytes() == (out / name).read_bytes(), name


@pytest.mark.slow
def test_population_on_two_devices_equals_one_device_also_after_an_elastic_resume(pbt_folder, tmp_path):
    from jaxppo import runner

    _, whole = pbt_folder
    two = _pbt_run(tmp_path / "two", num_devices=2)
    chex.assert_trees_all_close(two.state.params, whole.state.params, rtol=1e-4, atol=1e-6)
    chex.assert_trees_all_equal(two.state.hparams.lr, whole.state.hparams.lr)
    # Half on one device, the rest on two: the hyperparameters (state) and the decisions carry over.
    _pbt_run(tmp_path / "elastic", stop_after=4)
    elastic = runner.resume_run(tmp_path / "elastic", quiet=True, num_devices=2)
    chex.assert_trees_all_equal(elastic.state.hparams, whole.state.hparams)
    chex.assert_trees_all_close(elastic.state.params, whole.state.params, rtol=1e-4, atol=1e-6)


def _l2_loss(params, batch, hp, config, evaluate):
    """ppo_loss plus hp.l2_coef times the squared weights: a custom loss with a coefficient of its own."""
    from jaxppo.losses import ppo_loss

    loss, metrics = ppo_loss(params, batch, hp, config, evaluate)
    l2 = sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(params))
    return loss + hp.l2_coef * l2, {"ppo": metrics, "l2_coef": hp.l2_coef}


_l2_loss.hyperparameters = {"l2_coef": 1e-4}


def test_a_custom_loss_coefficient_is_explored_with_memory_and_normalisation():
    config = jaxppo.PPOConfig(env="CartPole-v1", num_envs=4, num_steps=8, num_minibatches=2, total_timesteps=4 * 8 * 4,
                              memory="gru", memory_size=8, normalize_observations=True)
    parts = make_train_parts(config, loss_fn=_l2_loss)
    pbt = PBTConfig(population=4, ready_updates=2, explore=(ExploreRange("l2_coef", 1e-6, 1e-2, "log"),))
    pbt.validate(tuple(default_hparams(config, _l2_loss).as_dict()))
    keys = jax.vmap(jax.random.key)(jnp.arange(4))
    states = jax.jit(jax.vmap(parts.init, in_axes=(0, None)))(keys, default_hparams(config, _l2_loss))
    states = states.replace(hparams=sample_hparams(states.hparams, pbt, jax.random.key(0)))
    before = np.asarray(states.hparams.l2_coef)
    states, metrics, records = jax.jit(make_population_chunk(parts.run, pbt, 4))(states, jnp.int32(4))
    # The loss read each member's own coefficient, and the steps changed the replaced members' values.
    np.testing.assert_allclose(np.asarray(metrics.loss["l2_coef"])[:, 0], before, rtol=1e-6)
    after = np.asarray(states.hparams.l2_coef)
    replaced = np.asarray(records.parents[-1]) != np.arange(4)
    assert np.all((after >= 1e-6 * (1 - 1e-6)) & (after <= 1e-2 * (1 + 1e-6)))
    assert replaced.sum() == 1 and all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(states.params))


def test_plot_draws_the_population_returns_and_hyperparameter_trajectories(pbt_folder, tmp_path):
    from jaxppo import cli
    from jaxppo.plotting import population_figure

    out, result = pbt_folder
    fig = population_figure(out)
    returns, lr, clip = fig.axes
    assert len(returns.lines) == 4 and returns.get_ylabel() == "episode return"
    assert lr.get_ylabel() == "lr" and clip.get_ylabel() == "clip_eps"
    # Per hyperparameter: a trajectory per member and a marker line per member that copied another.
    copied = {int(m) for m in np.loadtxt(out / "lineage.csv", delimiter=",", skiprows=1, ndmin=2)[:, 1]}
    assert len(lr.lines) == 4 + len(copied)
    # Member 0's trajectory ends at its final learning rate.
    np.testing.assert_allclose(lr.lines[0].get_ydata()[-1], float(result.state.hparams.lr[0]), rtol=1e-6)
    assert cli.main(["plot", str(out), "--population", "--out", str(tmp_path / "pop.png")]) == 0
    assert (tmp_path / "pop.png").read_bytes()[:4] == b"\x89PNG"


def test_load_gives_the_best_member_and_eval_names_it(pbt_folder, capsys):
    from jaxppo import cli

    out, result = pbt_folder
    best = result.summary["best_member"]
    assert jaxppo.load(out).seed == best and jaxppo.load(out, member=(best + 1) % 4).seed == (best + 1) % 4
    assert cli.main(["eval", str(out), "--num-episodes", "2", "--overwrite"]) == 0
    assert f"best member (by final training return): {best}," in capsys.readouterr().out
