"""The same training program on older versions of jaxppo and on the working tree, timed in ONE process.

Each --commits SHA is exported with `git archive SHA jaxppo` into a temporary folder and imported as the package
`jaxppo_SHA` (its own imports rewritten to that name), so every version runs in the same process, interleaved:
every program is compiled first, then each repeat times every program once in turn; the best repeat counts. The
working tree's `jaxppo` is timed beside them, and with memory_shared=True where the program has memory (the one core
for both heads that older versions lack), and with --memory gru also in the network of PureJaxRL's ppo_rnn.py (one
ReLU layer of the GRU's width, the shared GRU, a layer of that width in each head: head_hidden_sizes). Program:
CartPole-v1, 4 envs x 128 steps, 4 epochs x 4 minibatches (PureJaxRL's ppo_rnn.py layout), --memory gru/none,
--memory-size units.

    .venv/bin/python experiments/code_versions.py --commits 228d5b7 4ddf848 --memory gru --repeats 5
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

REPO = Path(__file__).resolve().parents[1]


def export_version(sha: str, into: Path) -> str:
    """Write jaxppo as of commit `sha` to into/jaxppo_<sha> with its imports renamed; returns the package name."""
    name = f"jaxppo_{sha}"
    archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "jaxppo"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    (into / "jaxppo").rename(into / name)
    for path in (into / name).rglob("*.py"):
        text = path.read_text()
        text = re.sub(r"\bfrom jaxppo(\.| import)", rf"from {name}\1", text)
        text = re.sub(r"\bimport jaxppo\b", f"import {name}", text)
        path.write_text(text)
    return name


def build(package: str, memory: str, memory_size: int, steps: int, **extra):
    """(config, compiled train) of the program on one version of the package."""
    config_module = importlib.import_module(f"{package}.config")
    train_module = importlib.import_module(f"{package}.train")
    fields = dict(env="CartPole-v1", num_envs=4, num_steps=128, num_minibatches=4, num_epochs=4,
                  total_timesteps=steps, memory=memory, **extra)
    if memory != "none":
        fields["memory_size"] = memory_size
    config = config_module.PPOConfig(**fields)
    program = jax.jit(train_module.make_train(config)).lower(jax.random.key(0)).compile()
    jax.block_until_ready(program(jax.random.key(0)))  # warm
    return config, program


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", nargs="+", required=True, help="commits to time against the working tree")
    parser.add_argument("--memory", choices=("gru", "lru", "none"), default="gru")
    parser.add_argument("--memory-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40_960)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        sys.path.insert(0, folder)
        entries = [[sha, *build(export_version(sha, Path(folder)), args.memory, args.memory_size, args.steps)]
                   for sha in args.commits]
        entries.append(["working tree", *build("jaxppo", args.memory, args.memory_size, args.steps)])
        if args.memory != "none":
            entries.append(["working tree, memory_shared", *build("jaxppo", args.memory, args.memory_size,
                                                                   args.steps, memory_shared=True)])
        if args.memory == "gru":
            width = args.memory_size
            entries.append(["working tree, ppo_rnn.py's network", *build(
                "jaxppo", args.memory, width, args.steps, memory_shared=True, hidden_sizes=(width,),
                activation="relu", head_hidden_sizes=(width,))])
        best = [float("inf")] * len(entries)
        for _ in range(args.repeats):
            for i, (_, _, program) in enumerate(entries):
                start = time.perf_counter()
                jax.block_until_ready(program(jax.random.key(0)))
                best[i] = min(best[i], time.perf_counter() - start)
    print(f"| version | steps/s | vs {args.commits[0]} |\n|---|---:|---:|")
    for (label, config, _), seconds in zip(entries, best):
        print(f"| {label} | {config.num_env_steps / seconds:,.0f} | {best[0] / seconds:.2f}x |")


if __name__ == "__main__":
    main()
