"""Population-based training (Jaderberg et al. 2017) inside the compiled program: exploit and explore on a
vmapped population of PPO runs, every `ready_updates` updates, with no host round trip.

A population is a TrainState with a leading member axis [N, ...] (each member its own seed, environments and
hyperparameters: `TrainState.hparams`). Every K = ready_updates updates:

1. fitness: the mean training return of each member over its last `fitness_window` updates (NaN-free; a member
   whose parameters or fitness are not finite ranks last, so it is always replaced);
2. exploit (truncation selection): the bottom `truncation` fraction of the ranking copies the parameters, the
   optimizer state, the normaliser statistics and the hyperparameters of a member drawn uniformly from the top
   fraction. Everything else (environments, episode statistics, memory carries, the PRNG key, the update counter)
   stays the member's own, so no two members ever replay the same randomness;
3. explore: each copied member changes each explored hyperparameter: with probability `resample_probability` it is
   drawn afresh from its range (uniformly, or uniformly in log space), otherwise multiplied by 0.8 or 1.25 (one of
   the two at random) and clipped into its range.

All randomness comes from `fold_in(key(pbt_seed), update counter)`, so a run is deterministic given its seed and
a resumed run takes exactly the same decisions. The record of each step (`PopulationRecord`: who copied whom and
every member's explored hyperparameters) goes to the run folder's lineage.csv and hparams.csv.

The vmapped population and the argsort-rank / copy-top-over-bottom / resample shape follow QDax's PBT for SAC/TD3
(`baselines/pbt.py`); written here for PPO's state.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

SCALES = ("linear", "log")
PERTURB_FACTORS = (0.8, 1.25)


@dataclasses.dataclass(frozen=True)
class ExploreRange:
    """The range a hyperparameter is explored in: [low, high], perturbed and resampled linearly or in log space."""

    name: str
    low: float
    high: float
    scale: str = "log"


@dataclasses.dataclass(frozen=True)
class PBTConfig:
    """How a population is trained (the PPO settings of every member are the run's PPOConfig + its HParams)."""

    population: int = 8
    """Members N, trained at once (vmapped); member i starts from seed + i."""
    ready_updates: int = 10
    """K: updates between two exploit/explore steps."""
    explore: tuple[ExploreRange, ...] = (ExploreRange("lr", 1e-5, 1e-2, "log"),
                                         ExploreRange("ent_coef", 1e-4, 0.1, "log"))
    """Hyperparameters explored and their ranges (traced HParams names, a custom loss's declared ones included)."""
    truncation: float = 0.25
    """Fraction of the population replaced at each step (the same fraction is the pool they copy from)."""
    resample_probability: float = 0.25
    """Probability that an explored value is drawn afresh instead of perturbed by x0.8 / x1.25."""
    fitness_window: int = 0
    """Updates whose mean training return is a member's fitness (0: ready_updates)."""
    initial: str = "sample"
    """Initial hyperparameters of the members: 'sample' (drawn from the ranges) or 'config' (all the config's)."""
    seed: int = 0
    """Seed of exploit/explore decisions and of the initial draw."""

    @property
    def window(self) -> int:
        return self.fitness_window or self.ready_updates

    @property
    def num_replaced(self) -> int:
        """Members replaced at each step: floor(N * truncation), at least 1 (none for a population of 1)."""
        if self.population < 2:
            return 0
        return min(self.population // 2, max(1, math.floor(self.population * self.truncation)))

    def validate(self, hparam_names: tuple[str, ...] = ()) -> None:
        """ValueError naming the field and the rule (hparam_names: the run's traced names, for explore)."""
        for name, low in (("population", 1), ("ready_updates", 1), ("fitness_window", 0), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}={value!r}: must be an integer >= {low}")
        if self.fitness_window > self.ready_updates:
            raise ValueError(f"fitness_window={self.fitness_window}: at most ready_updates={self.ready_updates} (the "
                             "updates since the last step)")
        if not 0.0 < self.truncation <= 0.5:
            raise ValueError(f"truncation={self.truncation!r}: must be in (0, 0.5] (a fraction of the population)")
        if not 0.0 <= self.resample_probability <= 1.0:
            raise ValueError(f"resample_probability={self.resample_probability!r}: must be in [0, 1]")
        if self.initial not in ("sample", "config"):
            raise ValueError(f"initial={self.initial!r}: must be 'sample' or 'config'")
        if not self.explore:
            raise ValueError("explore: name at least one hyperparameter to explore, e.g. lr=1e-5:1e-2:log")
        seen = set()
        for item in self.explore:
            if hparam_names and item.name not in hparam_names:
                raise ValueError(f"explore {item.name!r}: not a traced hyperparameter; choose from "
                                 f"{', '.join(hparam_names)}")
            if item.name in seen:
                raise ValueError(f"explore {item.name!r}: given twice")
            seen.add(item.name)
            if item.scale not in SCALES:
                raise ValueError(f"explore {item.name!r}: scale {item.scale!r} must be linear or log")
            if not (math.isfinite(item.low) and math.isfinite(item.high)) or not item.low < item.high:
                raise ValueError(f"explore {item.name!r}: needs finite low < high, got [{item.low}, {item.high}]")
            if item.scale == "log" and item.low <= 0:
                raise ValueError(f"explore {item.name!r}: low={item.low} must be > 0 on a log scale")


class PopulationRecord(NamedTuple):
    """One exploit/explore step: parents int32 [N] (parents[i] = the member i copied, i itself when kept),
    fitness float32 [N] (what ranked them), hparams float32 [N, H] (the explored values after the step)."""

    parents: jax.Array
    fitness: jax.Array
    hparams: jax.Array


def member_fitness(episode_return: jax.Array, window: int) -> jax.Array:
    """float32 [N]: mean of the last `window` per-update returns [N, U] ignoring NaN (no episode ended yet);
    -inf where there is none."""
    recent = episode_return[:, -window:]
    finite = jnp.isfinite(recent)
    count = jnp.sum(finite, axis=1)
    total = jnp.sum(jnp.where(finite, recent, 0.0), axis=1)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), -jnp.inf)


def params_finite(params: Any) -> jax.Array:
    """bool [N]: every parameter of member i is finite."""
    leaves = [jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], -1)), axis=1) for leaf in jax.tree.leaves(params)]
    return jnp.all(jnp.stack(leaves), axis=0)


def _to_unit(item: ExploreRange, value: jax.Array) -> jax.Array:
    if item.scale == "log":
        return (jnp.log(value) - math.log(item.low)) / (math.log(item.high) - math.log(item.low))
    return (value - item.low) / (item.high - item.low)


def _from_unit(item: ExploreRange, unit: jax.Array) -> jax.Array:
    if item.scale == "log":
        return jnp.exp(math.log(item.low) + unit * (math.log(item.high) - math.log(item.low)))
    return item.low + unit * (item.high - item.low)


def sample_hparams(hparams: Any, pbt: PBTConfig, key: jax.Array) -> Any:
    """Each member's explored hyperparameters drawn from their ranges (hparams: HParams [N])."""
    draws = jax.random.uniform(key, (len(pbt.explore), pbt.population))
    return hparams.replace(**{item.name: _from_unit(item, draws[i]).astype(jnp.float32)
                              for i, item in enumerate(pbt.explore)})


def explore(hparams: Any, replaced: jax.Array, pbt: PBTConfig, key: jax.Array) -> Any:
    """Perturb (x0.8 / x1.25, clipped into range) or resample the explored hyperparameters of the members where
    replaced (bool [N]); the others keep theirs."""
    resample_key, choice_key, draw_key = jax.random.split(key, 3)
    shape = (len(pbt.explore), pbt.population)
    resample = jax.random.bernoulli(resample_key, pbt.resample_probability, shape)
    factor = jnp.where(jax.random.bernoulli(choice_key, 0.5, shape), PERTURB_FACTORS[1], PERTURB_FACTORS[0])
    draws = jax.random.uniform(draw_key, shape)
    changes = {}
    for i, item in enumerate(pbt.explore):
        value = getattr(hparams, item.name)
        perturbed = jnp.clip(value * factor[i], item.low, item.high)
        new = jnp.where(resample[i], _from_unit(item, draws[i]), perturbed)
        changes[item.name] = jnp.where(replaced, new, value).astype(jnp.float32)
    return hparams.replace(**changes)


def exploit_explore(state: Any, fitness: jax.Array, pbt: PBTConfig, key: jax.Array) -> tuple[Any, PopulationRecord]:
    """One PBT step on a population state [N, ...] (see the module docstring). fitness: float32 [N]."""
    n, k = pbt.population, pbt.num_replaced
    fitness = jnp.where(jnp.isfinite(fitness) & params_finite(state.params), fitness, -jnp.inf)
    ranking = jnp.argsort(fitness, stable=True)  # worst first; ties keep member order
    bottom, top = ranking[:k], ranking[n - k:]
    pick_key, explore_key = jax.random.split(key)
    sources = top[jax.random.randint(pick_key, (k,), 0, k)]
    parents = jnp.arange(n, dtype=jnp.int32).at[bottom].set(sources.astype(jnp.int32))
    replaced = parents != jnp.arange(n)

    def copy(tree):
        return jax.tree.map(lambda x: x[parents], tree)

    hparams = explore(copy(state.hparams), replaced, pbt, explore_key)
    state = state.replace(params=copy(state.params), opt_state=copy(state.opt_state),
                          normalizers=copy(state.normalizers), hparams=hparams)
    values = jnp.stack([getattr(hparams, item.name) for item in pbt.explore], axis=1)
    return state, PopulationRecord(parents, fitness, values)


def pbt_key(pbt: PBTConfig, update: jax.Array) -> jax.Array:
    """The key of the exploit/explore step after `update` updates."""
    return jax.random.fold_in(jax.random.key(pbt.seed), update)


def make_population_chunk(run: Callable, pbt: PBTConfig, chunk_updates: int
                          ) -> Callable[[Any, jax.Array], tuple[Any, Any, PopulationRecord]]:
    """chunk(states [N], num_valid) -> (states, metrics [N, chunk_updates], records [P]) for P = chunk_updates / K
    periods of K = ready_updates updates, each followed by exploit/explore when it ran whole.

    run(state, num_updates, num_valid) is one member's TrainParts.run. chunk_updates must be a multiple of K and
    every chunk must start at a multiple of K (the runner aligns chunks), so steps happen after updates K, 2K, ...
    of the run whatever the chunking. record.parents of a period without a step is arange(N) and its fitness NaN.
    """
    k = pbt.ready_updates
    if chunk_updates % k:
        raise ValueError(f"chunk of {chunk_updates} updates: must be a multiple of ready_updates={k}")
    periods = chunk_updates // k
    run_members = jax.vmap(lambda s, valid: run(s, k, valid), in_axes=(0, None))

    def period(states, index):
        valid = jnp.clip(index[1] - index[0] * k, 0, k).astype(jnp.int32)
        states, metrics = run_members(states, valid)

        def step(states):
            fitness = member_fitness(metrics.episode_return, pbt.window)
            return exploit_explore(states, fitness, pbt, pbt_key(pbt, states.update_step[0]))

        def keep(states):
            values = jnp.stack([getattr(states.hparams, item.name) for item in pbt.explore], axis=1)
            n = pbt.population
            return states, PopulationRecord(jnp.arange(n, dtype=jnp.int32), jnp.full((n,), jnp.nan), values)

        states, record = lax.cond(valid == k, step, keep, states)
        return states, (metrics, record)

    def chunk(states, num_valid):
        steps = jnp.stack([jnp.arange(periods), jnp.full((periods,), num_valid)], axis=1)
        states, (metrics, records) = lax.scan(period, states, steps)
        # [P, N, K, ...] -> [N, P * K, ...]
        metrics = jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1).reshape((x.shape[1], periods * k) + x.shape[3:]),
                               metrics)
        return states, metrics, records

    return chunk
