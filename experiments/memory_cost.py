"""Where a recurrent program's time goes on this machine: the LRU program with parts of its core taken out.

One process, every program compiled first, then timed interleaved (best of --repeats), CartPole-v1 4 envs x 128
steps, 4 minibatches (PureJaxRL's ppo_rnn.py layout), LRU width --width after the default two-layer torso:

- lru: the real core;  lru-no-scan: the recurrence replaced by h_t = b_t (no time loop; everything else kept);
- lru-no-readout: the core outputs tanh(h) instead of tanh(W [h, x] + b);
- lru-identity: the core returns its input's first H features (no core arithmetic at all: what remains is the
  recurrent path itself — sequence minibatches, stored carries, per-step replay of [T, B] sequences);
- feed-forward: memory="none".

Each at 4 epochs and at 1 epoch: the difference is 3 epochs of the update, so the rollout's and one epoch's share
follow (ms per update). The variants replace functions of `jaxppo.memory` while their program is traced, so they
measure what the parts cost, not a design anyone should train with.

    .venv/bin/python experiments/memory_cost.py            # writes experiments/results/memory_cost.{csv,md}
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import NamedTuple

import common
import jax
import jax.numpy as jnp

import jaxppo.memory as memory
from jaxppo.config import PPOConfig
from jaxppo.train import make_train


def _no_scan(carry, a, b, first, scan="auto"):
    return b


def _no_readout(params, carry, inputs, first, decay_power, scan):
    log_a = -decay_power * jax.nn.softplus(-params["decay"])
    scale = jnp.sqrt(jnp.maximum(-jnp.expm1(2.0 * log_a), 1e-6))
    value = memory._affine(inputs, params["input"])
    h = memory.linear_recurrence(carry, jnp.broadcast_to(jnp.exp(log_a), value.shape), scale * value, first, scan)
    return h[-1], jnp.tanh(h)


def _identity(params, carry, inputs, first, decay_power, scan):
    out = inputs[..., : carry.shape[-1]]
    return carry + 0.0 * out[-1], out


VARIANTS = {"lru": {}, "lru-no-scan": {"linear_recurrence": _no_scan},
            "lru-no-readout": {"_lru_apply": _no_readout}, "lru-identity": {"_lru_apply": _identity},
            "feed-forward": {}}
"""Program name -> functions of jaxppo.memory replaced while it is traced."""


@contextlib.contextmanager
def replaced(functions: dict):
    originals = {name: getattr(memory, name) for name in functions}
    for name, function in functions.items():
        setattr(memory, name, function)
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(memory, name, function)


class Row(NamedTuple):
    program: str
    ms_per_update: float
    ms_per_update_1_epoch: float
    ms_rollout_and_rest: float
    ms_per_epoch: float
    vs_feed_forward: float


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out-dir", type=Path, default=Path("experiments/results"))
    args = parser.parse_args(argv)
    programs = {}
    for name, functions in VARIANTS.items():
        for epochs in (4, 1):
            config = PPOConfig(env="CartPole-v1", num_envs=4, num_steps=128, num_minibatches=4, num_epochs=epochs,
                               total_timesteps=512 * args.updates, memory="none" if name == "feed-forward" else "lru",
                               memory_size=args.width)
            with replaced(functions):
                program = jax.jit(make_train(config)).lower(jax.random.key(0)).compile()
            jax.block_until_ready(program(jax.random.key(0)))
            programs[name, epochs] = program
    best = {entry: float("inf") for entry in programs}
    for _ in range(args.repeats):
        for entry, program in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(program(jax.random.key(0)))
            best[entry] = min(best[entry], time.perf_counter() - start)
    ms = {entry: seconds / args.updates * 1e3 for entry, seconds in best.items()}
    rows = []
    for name in VARIANTS:
        per_epoch = (ms[name, 4] - ms[name, 1]) / 3
        rows.append(Row(name, ms[name, 4], ms[name, 1], ms[name, 1] - per_epoch, per_epoch,
                        ms["feed-forward", 4] / ms[name, 4]))
    header = "\n".join(common.machine_lines())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    common.write_csv(args.out_dir / "memory_cost.csv", rows)
    (args.out_dir / "memory_cost.md").write_text(header + "\n\n" + common.markdown_table(rows) + "\n")
    print(header + "\n\n" + common.markdown_table(rows), flush=True)


if __name__ == "__main__":
    main()
