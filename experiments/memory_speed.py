"""Recurrent PPO speed and quality: PureJaxRL's ppo_rnn.py, jaxppo's GRU, jaxppo's LRU and jaxppo feed-forward.

Speed (one process, interleaved: every program is compiled first, then each repeat times every program once in
turn, so all of them see the same machine load; the best repeat counts):

- cartpole-4x128: CartPole-v1, 4 envs x 128 steps, 4 epochs x 4 minibatches (PureJaxRL's ppo_rnn.py config; its
  GRU has 128 units). Rows: purejaxrl-gru, jaxppo gru (128), gru-shared (the same GRU with memory_shared=True: one
  torso and one core for both heads), gru-shared-heads (gru-shared with a 128-wide hidden layer in each head),
  gru-ppo-rnn (ppo_rnn.py's network: one 128-wide ReLU layer, the shared GRU, a 128-wide ReLU layer per head), lru
  (128, the same width), lru in the CartPole-PO LRU preset's shape (width 32 after one 64-wide torso layer), and
  feed-forward (the default two-layer torso); each lru row again as lru-associative (the parallel scan the LRU uses
  on accelerators, forced here; "lru" is what the CPU backend runs, a sequential scan);
- the memory presets (memorychain-bsuite, jaxppo/cartpole-po-v1): the GRU preset, the GRU preset with
  memory_shared=True (gru-shared), gru-shared-heads and gru-ppo-rnn at the preset's GRU width, the LRU preset
  (`<preset>/lru`), the GRU preset with memory="lru" (only the core differs), and feed-forward (the GRU preset with
  memory="none"); every setting also times lru-shared (its narrow LRU program with memory_shared=True);
  PureJaxRL's ppo_rnn.py runs MemoryChain-bsuite with the preset's layout (it has no CartPole-PO).

Quality (--part quality): each memory task trained with the GRU preset and with the LRU preset (--cores; gru-shared /
lru-shared: the GRU / LRU preset with memory_shared=True; gru-shared-heads, gru-ppo-rnn: the programs of those names
above, at the GRU preset's width and settings) at equal env steps, --seeds seeds vmapped in one program
(split from --seed-key: 1000, the default, the table's seeds, never used for tuning), reporting the final training
return, a greedy evaluation, the seeds that solved the task and the time to the threshold (per seed, the first update
where the trailing 10-update mean return reaches it; in env steps and in seconds of the vmapped run). The harder
task is MemoryChain-bsuite with a memory length of --chain-length steps (the cue is seen on the first step, the query
answered --chain-length steps later). --set FIELD=VALUE (repeatable) gives every quality run that PPOConfig field
(its rows are named with it).

--sequence-lengths L ... adds, to every speed setting, its gru and lru programs replaying sequences of L steps
(`sequence_length`, rows "<core>-seq<L>"); --sequence-length L trains every quality run that way. --tag names the
result files apart (memory_speed<tag>.csv, ...).

PureJaxRL is third-party code and is not kept here: pass a checkout of github.com/luchris429/purejaxrl (Apache-2.0)
with --purejaxrl PATH. Its ppo_rnn.py is patched in memory at run time, for the installed libraries only:
`nn.GRUCell.initialize_carry` is an instance method taking the carry shape in flax >= 0.8 (and GRUCell needs its
`features`), gymnax >= 0.0.9 returns terminated and truncated apart (its wrappers get done = either, as
before), and distrax, navix and brax (imported by its wrappers module, unused here) are replaced by stand-ins
(a categorical distribution with distrax's sample / log_prob / entropy). Nothing in its algorithm is changed.

    .venv/bin/python experiments/memory_speed.py --purejaxrl /path/to/purejaxrl --part speed
    .venv/bin/python experiments/memory_speed.py --part quality --seeds 8

Writes memory_speed.csv / memory_quality.csv and .md tables to --out-dir.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable, NamedTuple

import common
import jax
import jax.numpy as jnp
import numpy as np

from jaxppo.config import PPOConfig
from jaxppo.evaluate import make_evaluate
from jaxppo.outputs import final_returns
from jaxppo.presets import preset_config
from jaxppo.train import make_train

SPEED_SETTINGS = ("cartpole-4x128", "memorychain-bsuite", "jaxppo/cartpole-po-v1")
QUALITY_TASKS = {"memorychain-bsuite": 0.99, "jaxppo/cartpole-po-v1": 475.0, "memorychain-long": 0.99,
                 "cartpole-4x128": 475.0}
"""Task -> return threshold (MemoryChain returns +1 for the right answer, -1 otherwise; CartPole 475).
cartpole-4x128 is the speed setting's layout (fully observed CartPole-v1, 500k steps unless --quality-budget): a
check that a program timed there learns, not a memory task; not in the default --tasks."""


# ------------------------------------------------------------------------------------------------- PureJaxRL
class _Categorical:
    """distrax.Categorical's sample / log_prob / entropy, for PureJaxRL's ppo_rnn.py (distrax is not installed)."""

    def __init__(self, logits):
        self.logits = jax.nn.log_softmax(logits)

    def sample(self, seed):
        return jax.random.categorical(seed, self.logits)

    def log_prob(self, value):
        return jnp.take_along_axis(self.logits, value[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def entropy(self):
        return -jnp.sum(jnp.exp(self.logits) * self.logits, axis=-1)


WRAPPER_PATCHES = (
    # gymnax >= 0.0.9 steps return (obs, state, reward, terminated, truncated, info); PureJaxRL's wrappers expect
    # the older (obs, state, reward, done, info) with done = terminated or truncated, which is what they get.
    ("obs, state, reward, done, info = self._env.step(key, state, action, params)",
     "obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, params)\n"
     "        done = jnp.logical_or(terminated, truncated)"),
)
PATCHES = (
    # flax >= 0.8: initialize_carry is a method of a GRUCell that knows its features, taking (rng, input shape).
    ("return nn.GRUCell.initialize_carry(\n            jax.random.PRNGKey(0), (batch_size,), hidden_size\n        )",
     "return nn.GRUCell(features=hidden_size).initialize_carry(\n            jax.random.PRNGKey(0), "
     "(batch_size, hidden_size)\n        )"),
    ("new_rnn_state, y = nn.GRUCell()(rnn_state, ins)",
     "new_rnn_state, y = nn.GRUCell(features=rnn_state.shape[-1])(rnn_state, ins)"),
)


def load_purejaxrl(root: Path) -> types.ModuleType:
    """PureJaxRL's ppo_rnn module from a checkout, patched for the installed flax (see the module docstring)."""
    folder = root / "purejaxrl" if (root / "purejaxrl" / "ppo_rnn.py").exists() else root
    for name in ("distrax", "navix", "brax", "brax.envs", "brax.envs.wrappers", "brax.envs.wrappers.training"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["distrax"].Categorical = _Categorical
    training = sys.modules["brax.envs.wrappers.training"]
    training.EpisodeWrapper = training.AutoResetWrapper = object
    sys.modules["brax"].envs = sys.modules["brax.envs"]
    _exec_patched(folder / "wrappers.py", "wrappers", WRAPPER_PATCHES)
    return _exec_patched(folder / "ppo_rnn.py", "ppo_rnn", PATCHES)


def _exec_patched(path: Path, name: str, patches: tuple[tuple[str, str], ...]) -> types.ModuleType:
    """The module `name` from the file at path with each (old, new) text replaced (SystemExit if one is missing)."""
    source = path.read_text()
    for old, new in patches:
        if old not in source:
            raise SystemExit(f"{path}: expected text not found, cannot patch: {old!r}")
        source = source.replace(old, new)
    module = sys.modules[name] = types.ModuleType(name)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def purejaxrl_config(config: PPOConfig) -> dict[str, Any]:
    return {"LR": config.lr, "NUM_ENVS": config.num_envs, "NUM_STEPS": config.num_steps,
            "TOTAL_TIMESTEPS": config.num_env_steps, "UPDATE_EPOCHS": config.num_epochs,
            "NUM_MINIBATCHES": config.num_minibatches, "GAMMA": config.gamma, "GAE_LAMBDA": config.gae_lambda,
            "CLIP_EPS": config.clip_eps, "ENT_COEF": config.ent_coef, "VF_COEF": config.vf_coef,
            "MAX_GRAD_NORM": config.max_grad_norm, "ENV_NAME": config.env, "ANNEAL_LR": config.anneal_lr,
            "DEBUG": False}


# ------------------------------------------------------------------------------------------------------ speed
class SpeedRow(NamedTuple):
    setting: str
    program: str
    memory: str
    memory_size: int
    env_steps: int
    compile_s: float
    best_s: float
    steps_per_s: float
    vs_gru: float
    vs_feed_forward: float


def shared_with_head_layers(config: PPOConfig) -> PPOConfig:
    """The program with one core for both heads and a hidden layer of the core's width in each head
    (memory_shared=True, head_hidden_sizes=(memory_size,)); nothing else changed."""
    return dataclasses.replace(config, memory_shared=True, head_hidden_sizes=(config.memory_size,))


def ppo_rnn_shape(config: PPOConfig) -> PPOConfig:
    """The network of PureJaxRL's ppo_rnn.py at the config's GRU width W: one W-wide ReLU layer, one GRU of W units
    for both heads, a W-wide ReLU layer in each head (ppo_rnn.py: W = 128); the PPO settings are the config's."""
    width = config.memory_size
    return dataclasses.replace(config, memory="gru", memory_shared=True, hidden_sizes=(width,), activation="relu",
                               head_hidden_sizes=(width,))


def speed_programs(setting: str, steps: int, pjx: types.ModuleType | None,
                   sequence_lengths: tuple[int, ...] = ()) -> list[tuple[str, PPOConfig, bool]]:
    """(program name, config, is PureJaxRL) of one speed setting; each jaxppo gru / lru program again with every
    sequence length in sequence_lengths (named "<name>-seq<L>": the update replays sequences of L steps)."""
    if setting == "cartpole-4x128":
        base = PPOConfig(env="CartPole-v1", num_envs=4, num_steps=128, num_minibatches=4, num_epochs=4,
                         total_timesteps=steps, memory="gru", memory_size=128)
        gru, lru = base, dataclasses.replace(base, memory="lru", memory_size=128)
        shape = preset_config("jaxppo/cartpole-po-v1/lru")  # the CartPole-PO LRU preset's width and torso
        narrow = dataclasses.replace(lru, memory_size=shape.memory_size, hidden_sizes=shape.hidden_sizes)
    else:
        gru = preset_config(setting, total_timesteps=steps)
        narrow = preset_config(f"{setting}/lru", total_timesteps=steps)
        lru = dataclasses.replace(gru, memory="lru")  # the GRU preset with the other core: only the core differs
    programs = [("gru", gru, False), ("gru-shared", dataclasses.replace(gru, memory_shared=True), False),
                ("gru-shared-heads", shared_with_head_layers(gru), False), ("gru-ppo-rnn", ppo_rnn_shape(gru), False),
                ("lru", lru, False), ("lru-associative", lru, False)]
    if narrow != lru:
        programs += [("lru", narrow, False), ("lru-associative", narrow, False)]
    programs.append(("lru-shared", dataclasses.replace(narrow, memory_shared=True), False))
    programs += [(f"{name}-seq{length}", dataclasses.replace(config, sequence_length=length), False)
                 for length in sequence_lengths for name, config, _ in list(programs) if name in ("gru", "lru")]
    programs.append(("feed-forward", dataclasses.replace(gru, memory="none"), False))
    if pjx is not None and "/" not in gru.env:
        programs.insert(0, ("purejaxrl-gru", dataclasses.replace(gru, memory_size=128), True))
    return programs


@contextlib.contextmanager
def scan_forced(scan: str | None):
    """While tracing: the LRU's recurrence evaluated by `scan` (jaxppo.memory.SCANS) whatever the backend; the
    lru-associative rows are the parallel form the LRU uses on accelerators, timed on this machine."""
    import jaxppo.memory as memory

    original = memory.linear_recurrence
    if scan is not None:
        memory.linear_recurrence = lambda carry, a, b, first, _scan="auto": original(carry, a, b, first, scan)
    try:
        yield
    finally:
        memory.linear_recurrence = original


def run_speed(args: argparse.Namespace, pjx: types.ModuleType | None) -> list[SpeedRow]:
    compiled = []
    for setting in args.settings:
        for name, config, third_party in speed_programs(setting, args.speed_steps, pjx,
                                                        tuple(args.sequence_lengths)):
            train = pjx.make_train(purejaxrl_config(config)) if third_party else make_train(config)
            start = time.perf_counter()
            with scan_forced("associative" if name == "lru-associative" else None):  # traced in lower()
                lowered = jax.jit(train).lower(jax.random.key(0) if not third_party else jax.random.PRNGKey(0))
            program = lowered.compile()
            seconds = time.perf_counter() - start
            key = jax.random.PRNGKey(0) if third_party else jax.random.key(0)
            jax.block_until_ready(program(key))  # warm
            compiled.append([setting, name, config, program, key, seconds, float("inf")])
            print(f"compiled {setting} {name} ({config.memory} {config.memory_size}) in {seconds:.1f}s", flush=True)
    for repeat in range(args.repeats):  # interleaved: every program once per repeat
        for entry in compiled:
            start = time.perf_counter()
            jax.block_until_ready(entry[3](entry[4]))
            entry[6] = min(entry[6], time.perf_counter() - start)
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    rows = []
    for setting in args.settings:
        entries = [e for e in compiled if e[0] == setting]
        speed = {id(e): e[2].num_env_steps / e[6] for e in entries}
        gru = next(speed[id(e)] for e in entries if e[1] == "gru")
        ff = next(speed[id(e)] for e in entries if e[1] == "feed-forward")
        for e in entries:
            config = e[2]
            rows.append(SpeedRow(setting, e[1], config.memory if e[1] != "purejaxrl-gru" else "gru",
                                 config.memory_size if e[1] != "feed-forward" else 0, config.num_env_steps, e[5],
                                 e[6], speed[id(e)], speed[id(e)] / gru, speed[id(e)] / ff))
    return rows


# ---------------------------------------------------------------------------------------------------- quality
class QualityRow(NamedTuple):
    task: str
    seed_key: int
    memory: str
    memory_size: int
    sequence_length: int
    seeds: int
    env_steps: int
    train_s: float
    final_mean: float
    final_worst: float
    greedy_mean: float
    greedy_worst: float
    solved_seeds: int
    threshold: float
    median_steps_to_threshold: float
    median_s_to_threshold: float


def quality_configs(task: str, memory: str, args: argparse.Namespace) -> tuple[PPOConfig, Any, Any]:
    """(config, env instance or None, env params or None) of a quality task for one core (gru-shared: the GRU
    program with memory_shared=True, one torso and core for both heads; lru-shared: the LRU program with it)."""
    if memory in ("gru-shared", "lru-shared"):
        config, env, env_params = quality_configs(task, memory.removesuffix("-shared"), args)
        return dataclasses.replace(config, memory_shared=True), env, env_params
    if memory in ("gru-shared-heads", "gru-ppo-rnn"):
        config, env, env_params = quality_configs(task, "gru", args)
        shape = shared_with_head_layers if memory == "gru-shared-heads" else ppo_rnn_shape
        return shape(config), env, env_params
    if task == "memorychain-long":
        from gymnax.environments.bsuite.memory_chain import EnvParams, MemoryChain

        preset = "memorychain-bsuite" if memory == "gru" else "memorychain-bsuite/lru"
        config = preset_config(preset, env="custom", num_steps=args.chain_steps,
                               total_timesteps=args.chain_budget, gamma=0.99)
        return (dataclasses.replace(config, sequence_length=args.sequence_length), MemoryChain(),
                EnvParams(memory_length=args.chain_length))
    budget = {"total_timesteps": args.quality_budget} if args.quality_budget else {}
    if task == "cartpole-4x128":
        config = [c for name, c, _ in speed_programs(task, budget.get("total_timesteps", 500_000), None)
                  if name == memory][-1]  # lru: the narrow program (the LRU presets' shape)
        return dataclasses.replace(config, sequence_length=args.sequence_length), None, None
    preset = task if memory == "gru" else f"{task}/lru"
    return preset_config(preset, sequence_length=args.sequence_length, **budget), None, None


def run_quality(args: argparse.Namespace) -> list[QualityRow]:
    rows = []
    keys = jax.random.split(jax.random.key(args.seed_key), args.seeds)
    for task in args.tasks:
        threshold = QUALITY_TASKS[task]
        for memory in args.cores:
            config, env, env_params = quality_configs(task, memory, args)
            config = dataclasses.replace(config, **dict(args.set))
            train = jax.jit(jax.vmap(make_train(config, env=env, env_params=env_params))).lower(keys).compile()
            start = time.perf_counter()
            state, metrics = jax.block_until_ready(train(keys))
            seconds = time.perf_counter() - start
            evaluate = jax.jit(jax.vmap(make_evaluate(config, num_episodes=32, env=env, env_params=env_params)))
            greedy = np.asarray(evaluate(state.params, jax.random.split(jax.random.key(1), args.seeds),
                                         state.normalizers).returns).mean(axis=-1)
            returns = np.asarray(metrics.episode_return, np.float64)
            completed = np.asarray(metrics.episodes_completed)
            finals = final_returns(returns)
            reached = common.first_reaching(returns, completed, threshold)
            per_update = config.num_envs * config.num_steps
            steps = np.where(reached > 0, reached * per_update, np.nan)
            solved = int(np.sum(reached > 0))
            median_steps = float(np.median(steps)) if solved == args.seeds else float("nan")
            label = " ".join([memory] + [f"{name}={value}" for name, value in args.set])
            row = QualityRow(task, args.seed_key, label, config.memory_size, config.sequence_length, args.seeds,
                             config.num_env_steps, seconds,
                             float(finals.mean()), float(finals.min()), float(greedy.mean()), float(greedy.min()),
                             solved, threshold, median_steps, median_steps / config.num_env_steps * seconds)
            rows.append(row)
            print(row, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("speed", "quality", "both"), default="both")
    parser.add_argument("--purejaxrl", type=Path, default=None, help="a checkout of luchris429/purejaxrl")
    parser.add_argument("--settings", nargs="+", choices=SPEED_SETTINGS, default=list(SPEED_SETTINGS))
    parser.add_argument("--speed-steps", type=int, default=4 * 128 * 40, help="env steps of every speed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", choices=tuple(QUALITY_TASKS),
                        default=["memorychain-bsuite", "jaxppo/cartpole-po-v1", "memorychain-long"])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--cores", nargs="+", choices=("gru", "gru-shared", "gru-shared-heads", "gru-ppo-rnn", "lru",
                                                     "lru-shared"),
                        default=["gru", "lru"])
    parser.add_argument("--seed-key", type=int, default=1000,
                        help="quality: the seeds are jax.random.split(key(K), --seeds); 1000, the table's, is "
                             "never used for tuning; 7 are the tuning seeds; others are fresh")
    parser.add_argument("--quality-budget", type=int, default=None, help="replaces the presets' budgets")
    parser.add_argument("--set", type=common.config_field, action="append", default=[], metavar="FIELD=VALUE",
                        help="quality: a PPOConfig field given to every run, e.g. --set normalize_rewards=True")
    parser.add_argument("--chain-length", type=int, default=30)
    parser.add_argument("--chain-steps", type=int, default=128, help="rollout length of the long MemoryChain")
    parser.add_argument("--chain-budget", type=int, default=1_000_000)
    parser.add_argument("--sequence-lengths", type=int, nargs="*", default=[],
                        help="speed: also time the gru / lru programs replaying sequences of these lengths")
    parser.add_argument("--sequence-length", type=int, default=0,
                        help="quality: the update replays sequences of this many steps (0: whole rollouts)")
    parser.add_argument("--tag", default="", help="appended to the result files' names")
    parser.add_argument("--out-dir", type=Path, default=Path("experiments/results"))
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    header = "\n".join(common.machine_lines())
    print(header, flush=True)
    if args.part in ("speed", "both"):
        pjx = load_purejaxrl(args.purejaxrl) if args.purejaxrl else None
        rows = run_speed(args, pjx)
        common.write_csv(args.out_dir / f"memory_speed{args.tag}.csv", rows)
        table = common.markdown_table(rows)
        (args.out_dir / f"memory_speed{args.tag}.md").write_text(header + "\n\n" + table + "\n")
        print(common.markdown_table(rows), flush=True)
    if args.part in ("quality", "both"):
        rows = run_quality(args)
        common.write_csv(args.out_dir / f"memory_quality{args.tag}.csv", rows)
        table = common.markdown_table(rows)
        (args.out_dir / f"memory_quality{args.tag}.md").write_text(header + "\n\n" + table + "\n")
        print(common.markdown_table(rows), flush=True)


if __name__ == "__main__":
    main()
