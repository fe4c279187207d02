"""Brax's own PPO (`brax.training.agents.ppo`) against jaxppo on Brax tasks: same task, settings and env steps.

    python experiments/brax_parity.py run --task inverted_pendulum --epochs 6 --seeds 0 1 2
    python experiments/brax_parity.py run --scale small --task inverted_pendulum --epochs 4 --seeds 0 1 \
        --trainers jaxppo-preset jaxppo-tanh jaxppo-sizes ...   # ablations: one factor of Brax's setup at a time
    python experiments/brax_parity.py report  # table + curves from the CSV

Settings: Brax's notebook PPO settings for inverted_pendulum (2048 envs, batch 1024 x 32 minibatches x unroll 5 =
163,840 env steps per update, 4 epochs, gamma 0.97, lambda 0.95, lr 3e-4, entropy 1e-2, clip 0.3, observation
normalisation, reward scaling 10, episode length 1000), used for every task; `--scale small` keeps all of them but
the batch (256 envs, batch 256 x 8 minibatches x unroll 5 = 10,240 env steps per update), for a shared CPU. jaxppo
runs the same update: num_envs x (batch * minibatches * unroll / num_envs) steps, the same minibatches and epochs.
Evaluation is Brax's protocol for both: at step 0 and after every `--updates-per-eval` updates (an "epoch"), 128
stochastic episodes of the current policy, mean undiscounted return. Training steps/s count only the update
programs (compilation and evaluation excluded): Brax's `training/sps` of every epoch after the first (the first
includes its compilation); jaxppo's chunk time after an ahead-of-time compile.

Runs are interleaved (seed by seed, the trainers' order alternating), one process, one trainer at a time, and each
run's rows are appended to the CSV as soon as it ends, so a partial sweep keeps what finished.

Brax 0.14.2's trainer calls `jax.device_put_replicated`, which jax 0.10 removed. `_install_device_put_replicated`
installs a one-host stand-in (each leaf stacked once per device, placed by an identity `jax.pmap` so its sharding is
the one Brax's pmapped epoch returns and the epoch compiles once) in THIS process only, for comparison; the jaxppo
package never touches jax's namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_STEM = "brax_parity"
"""experiments/results/<stem>.csv, .md and .png; `--results STEM` keeps a separate sweep (e.g. another hour) apart."""
FIELDS = ["trainer", "scale", "task", "backend", "seed", "epoch", "env_steps", "eval_return", "train_seconds", "sps"]

BRAX_PPO = dict(num_updates_per_batch=4, unroll_length=5, discounting=0.97, gae_lambda=0.95, learning_rate=3e-4,
                entropy_cost=1e-2, clipping_epsilon=0.3, reward_scaling=10.0, normalize_observations=True,
                episode_length=1000, action_repeat=1)
"""Brax's notebook settings for inverted_pendulum (brax's training notebook), used for every task here."""
SCALES = {"notebook": dict(num_envs=2048, batch_size=1024, num_minibatches=32),
          "small": dict(num_envs=256, batch_size=256, num_minibatches=8)}
"""The batch layout: Brax's notebook's, or a 16x smaller one for a shared CPU."""
EVAL_EPISODES = 128


def steps_per_update(scale: str) -> int:
    """Env steps of one update: batch_size * unroll_length * num_minibatches."""
    layout = SCALES[scale]
    return layout["batch_size"] * BRAX_PPO["unroll_length"] * layout["num_minibatches"]


def jaxppo_base(scale: str) -> dict[str, Any]:
    """Brax's update in jaxppo's fields (notebook: 2048 envs x 80 steps = 163,840 env steps in 32 minibatches)."""
    layout = SCALES[scale]
    return dict(num_envs=layout["num_envs"], num_steps=steps_per_update(scale) // layout["num_envs"],
                num_minibatches=layout["num_minibatches"], num_epochs=4, gamma=0.97, gae_lambda=0.95, lr=3e-4,
                anneal_lr=False, clip_eps=0.3, ent_coef=0.01, normalize_observations=True)


BRAX_DISTRIBUTION = dict(distribution="tanh_gaussian", scale_type="state_dependent", scale_fn="softplus",
                         min_scale=1e-3, init_scale=math.log(2.0))
"""Brax's NormalTanhDistribution: sigma = softplus(network output) + 0.001, starting near softplus(0) = log 2."""
BRAX_SIZES = dict(actor_hidden_sizes=(32,) * 4, critic_hidden_sizes=(256,) * 5)
BRAX_REWARD = dict(normalize_rewards=False, reward_scale=10.0)  # Brax's reward_scaling
NO_VALUE_CLIP = dict(clip_value_loss=False)

VARIANTS: dict[str, dict[str, Any]] = {
    # name: PPOConfig fields over jaxppo_base
    # The mapping the issue measured (the old brax presets): one 256x256 SiLU MLP per branch, Gaussian with a
    # state-independent log-std, reward normalisation, value clipping, grad norm 0.5.
    "jaxppo-preset": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True),
    # One factor of Brax's setup at a time, on top of jaxppo-preset:
    "jaxppo-tanh": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True, **BRAX_DISTRIBUTION),
    "jaxppo-sizes": dict(activation="silu", normalize_rewards=True, **BRAX_SIZES),
    "jaxppo-rewardscale": dict(hidden_sizes=(256, 256), activation="silu", **BRAX_REWARD),
    "jaxppo-noclip": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True, **NO_VALUE_CLIP),
    "jaxppo-nogradclip": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True, max_grad_norm=1e6),
    "jaxppo-noent": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True, ent_coef=0.0),
    "jaxppo-noadvnorm": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True,
                             normalize_advantages=False),
    # Brax's 4x32 actor with a 2x256 critic (Brax: 5x256): the critic's three extra 256x256 layers are most of the
    # update's arithmetic, so this asks whether the preset needs them.
    "jaxppo-smallactor": dict(activation="silu", normalize_rewards=True, actor_hidden_sizes=(32,) * 4,
                              critic_hidden_sizes=(256, 256)),
    "jaxppo-tanh-smallactor": dict(activation="silu", normalize_rewards=True, actor_hidden_sizes=(32,) * 4,
                                   critic_hidden_sizes=(256, 256), **BRAX_DISTRIBUTION),
    # Brax's advantages span one 5-step unroll: the same horizon in jaxppo (2048 envs x 5 steps per update, the same
    # 10,240 env steps), or a shorter GAE horizon over the usual rollout (lambda 0.8).
    "jaxppo-tanh-5step": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True, num_envs=2048,
                              num_steps=5, **BRAX_DISTRIBUTION),
    "jaxppo-tanh-lambda80": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True, gae_lambda=0.8,
                                 **BRAX_DISTRIBUTION),
    # Adam's epsilon as Brax's (optax.adam's default 1e-8; jaxppo's default is 1e-5).
    "jaxppo-tanh-eps8": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True, adam_eps=1e-8,
                             **BRAX_DISTRIBUTION),
    # One factor of Brax's setup at a time on top of the brax/inverted_pendulum preset's mapping (jaxppo-tanh-eps8):
    # its network sizes, its fixed reward scale, or neither value nor gradient-norm clipping.
    "jaxppo-tanh-eps8-sizes": dict(activation="silu", normalize_rewards=True, adam_eps=1e-8, **BRAX_DISTRIBUTION,
                                   **BRAX_SIZES),
    "jaxppo-tanh-eps8-rewardscale": dict(hidden_sizes=(256, 256), activation="silu", adam_eps=1e-8,
                                         **BRAX_DISTRIBUTION, **BRAX_REWARD),
    "jaxppo-tanh-eps8-noclips": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True,
                                     adam_eps=1e-8, max_grad_norm=1e6, **BRAX_DISTRIBUTION, **NO_VALUE_CLIP),
    "jaxppo-tanh-eps8-nogradclip": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True,
                                        adam_eps=1e-8, max_grad_norm=1e6, **BRAX_DISTRIBUTION),
    "jaxppo-tanh-eps8-novalueclip": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True,
                                         adam_eps=1e-8, **BRAX_DISTRIBUTION, **NO_VALUE_CLIP),
    # Brax's advantages on top of the preset's mapping: recomputed with the current critic before every epoch
    # (Brax: every minibatch), over unrolls of 5 steps (Brax's unroll_length), or both.
    "jaxppo-tanh-eps8-recompute": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True,
                                       adam_eps=1e-8, recompute_advantages=True, **BRAX_DISTRIBUTION),
    "jaxppo-tanh-eps8-horizon5": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True,
                                      adam_eps=1e-8, gae_horizon=5, **BRAX_DISTRIBUTION),
    "jaxppo-tanh-eps8-braxgae": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True,
                                     adam_eps=1e-8, recompute_advantages=True, gae_horizon=5, **BRAX_DISTRIBUTION),
    # Recomputed advantages without value and grad-norm clipping (as Brax).
    "jaxppo-tanh-eps8-recompute-noclips": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True,
                                               adam_eps=1e-8, recompute_advantages=True, max_grad_norm=1e6,
                                               **BRAX_DISTRIBUTION, **NO_VALUE_CLIP),
    # ... with Brax's 4x32 actor (critic kept at 2x256): the actor's 256x256 layers are half of the update's
    # arithmetic, which bounds the steps/s at the notebook batch.
    "jaxppo-tanh-eps8-recompute-noclips-smallactor": dict(actor_hidden_sizes=(32,) * 4,
                                                          critic_hidden_sizes=(256, 256), activation="silu",
                                                          normalize_rewards=True, adam_eps=1e-8,
                                                          recompute_advantages=True, max_grad_norm=1e6,
                                                          **BRAX_DISTRIBUTION, **NO_VALUE_CLIP),
    # ... with Brax's fixed reward scale (x 10) instead of reward normalisation.
    "jaxppo-tanh-eps8-recompute-noclips-rewardscale": dict(hidden_sizes=(256, 256), activation="silu", adam_eps=1e-8,
                                                           recompute_advantages=True, max_grad_norm=1e6,
                                                           **BRAX_DISTRIBUTION, **NO_VALUE_CLIP, **BRAX_REWARD),
    # ... with Brax's network sizes (4x32 actor, 5x256 critic).
    "jaxppo-tanh-eps8-recompute-noclips-sizes": dict(activation="silu", normalize_rewards=True, adam_eps=1e-8,
                                                     recompute_advantages=True, max_grad_norm=1e6,
                                                     **BRAX_DISTRIBUTION, **NO_VALUE_CLIP, **BRAX_SIZES),
    # ... with Brax's initialiser for the hidden layers (LeCun-uniform, variance 1 / fan_in; heads unchanged).
    "jaxppo-tanh-eps8-recompute-noclips-lecun": dict(hidden_sizes=(256, 256), activation="silu",
                                                     normalize_rewards=True, adam_eps=1e-8, recompute_advantages=True,
                                                     max_grad_norm=1e6, hidden_init="lecun_uniform",
                                                     **BRAX_DISTRIBUTION, **NO_VALUE_CLIP),
    # ... and over Brax's 5-step unrolls too (recompute + horizon 5 + no clips: Brax's advantages, per epoch).
    "jaxppo-tanh-eps8-braxgae-noclips": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True,
                                             adam_eps=1e-8, recompute_advantages=True, gae_horizon=5,
                                             max_grad_norm=1e6, **BRAX_DISTRIBUTION, **NO_VALUE_CLIP),
    # ... and with Brax's initial policy (a last layer initialised like any other: gain ~1, not 0.01).
    "jaxppo-tanh-eps8-recompute-noclips-gain1": dict(hidden_sizes=(256, 256), activation="silu",
                                                     normalize_rewards=True, adam_eps=1e-8, recompute_advantages=True,
                                                     max_grad_norm=1e6, policy_head_gain=1.0, **BRAX_DISTRIBUTION,
                                                     **NO_VALUE_CLIP),
    # Recomputed advantages on the hopper (preset), ant (tanh) and inverted_double_pendulum (sizes) mappings.
    "jaxppo-preset-recompute": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True,
                                    recompute_advantages=True),
    "jaxppo-tanh-recompute": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True,
                                  recompute_advantages=True, **BRAX_DISTRIBUTION),
    # ... the ant / hopper presets' mapping (jaxppo-tanh-recompute) with one more of Brax's choices: no value-loss
    # clip, or Brax's initialiser for the hidden layers (what closed inverted_pendulum's gap).
    "jaxppo-tanh-recompute-novalueclip": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True,
                                              recompute_advantages=True, **BRAX_DISTRIBUTION, **NO_VALUE_CLIP),
    "jaxppo-tanh-recompute-lecun": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True,
                                        recompute_advantages=True, hidden_init="lecun_uniform", **BRAX_DISTRIBUTION),
    # ... the hopper mapping without value-loss clipping too (the inverted_double_pendulum preset's lesson).
    "jaxppo-preset-recompute-novalueclip": dict(hidden_sizes=(256, 256), activation="silu", normalize_rewards=True,
                                                recompute_advantages=True, **NO_VALUE_CLIP),
    "jaxppo-sizes-recompute": dict(activation="silu", normalize_rewards=True, recompute_advantages=True,
                                   **BRAX_SIZES),
    # ... with Brax's initialiser for the hidden layers (the inverted_double_pendulum preset's mapping).
    "jaxppo-sizes-recompute-lecun": dict(activation="silu", normalize_rewards=True, recompute_advantages=True,
                                         hidden_init="lecun_uniform", **BRAX_SIZES),
    # One more of Brax's choices at a time on the inverted_double_pendulum preset's mapping (jaxppo-sizes-recompute):
    # Adam's epsilon 1e-8; no value-loss clip; neither that nor the gradient-norm clip; the tanh-squashed Gaussian.
    "jaxppo-sizes-recompute-eps8": dict(activation="silu", normalize_rewards=True, recompute_advantages=True,
                                        adam_eps=1e-8, **BRAX_SIZES),
    "jaxppo-sizes-recompute-novalueclip": dict(activation="silu", normalize_rewards=True, recompute_advantages=True,
                                               **NO_VALUE_CLIP, **BRAX_SIZES),
    "jaxppo-sizes-recompute-noclips": dict(activation="silu", normalize_rewards=True, recompute_advantages=True,
                                           max_grad_norm=1e6, **NO_VALUE_CLIP, **BRAX_SIZES),
    "jaxppo-sizes-recompute-tanh": dict(activation="silu", normalize_rewards=True, recompute_advantages=True,
                                        **BRAX_DISTRIBUTION, **BRAX_SIZES),
    "jaxppo-sizes-recompute-tanh-novalueclip": dict(activation="silu", normalize_rewards=True,
                                                    recompute_advantages=True, **NO_VALUE_CLIP, **BRAX_DISTRIBUTION,
                                                    **BRAX_SIZES),
    # The inverted_double_pendulum preset's mapping (no value-loss clip) with a cheaper critic than Brax's 5 x 256,
    # whose arithmetic bounds both programs: 5 x 128 (about 1/4 of it).
    "jaxppo-sizes-recompute-novalueclip-critic5x128": dict(activation="silu", normalize_rewards=True,
                                                          recompute_advantages=True, **NO_VALUE_CLIP,
                                                          **dict(BRAX_SIZES, critic_hidden_sizes=(128,) * 5)),
    # ... and with a narrower initial Gaussian (std 0.5 and 0.25 instead of 1: the stochastic policy that is
    # evaluated starts less noisy; Brax's tanh-squashed one starts at softplus(0) = 0.69 before the squash).
    "jaxppo-sizes-recompute-novalueclip-std05": dict(activation="silu", normalize_rewards=True,
                                                    recompute_advantages=True, init_scale=0.5, **NO_VALUE_CLIP,
                                                    **BRAX_SIZES),
    "jaxppo-sizes-recompute-novalueclip-std025": dict(activation="silu", normalize_rewards=True,
                                                     recompute_advantages=True, init_scale=0.25, **NO_VALUE_CLIP,
                                                     **BRAX_SIZES),
    # Everything of Brax's that jaxppo can express (no grad-norm clip, as Brax's default: a huge max_grad_norm; the
    # fixed reward scale x 10).
    "jaxppo-braxlike": dict(activation="silu", max_grad_norm=1e6, **BRAX_DISTRIBUTION, **BRAX_SIZES,
                            **BRAX_REWARD, **NO_VALUE_CLIP),
    # The same with Adam's epsilon as Brax's (1e-8): nothing of Brax's that jaxppo can express is left out.
    "jaxppo-braxlike-eps8": dict(activation="silu", max_grad_norm=1e6, adam_eps=1e-8, **BRAX_DISTRIBUTION,
                                 **BRAX_SIZES, **BRAX_REWARD, **NO_VALUE_CLIP),
    # The same with reward normalisation instead of the fixed scale.
    "jaxppo-braxnorm": dict(activation="silu", max_grad_norm=1e6, normalize_rewards=True, **BRAX_DISTRIBUTION,
                            **BRAX_SIZES, **NO_VALUE_CLIP),
}
# Brax's advantage form (`advantage_form="vtrace"`: IMPALA's r_t + gamma G_{t+1} - V(x_t) through the next step's
# lambda-return, as Brax's compute_gae returns them) on the mappings of the brax/inverted_pendulum and
# brax/inverted_double_pendulum presets.
VARIANTS.update({f"{name}-vtrace": dict(VARIANTS[name], advantage_form="vtrace")
                 for name in ("jaxppo-tanh-eps8-recompute-noclips-lecun", "jaxppo-sizes-recompute-novalueclip")})


# --------------------------------------------------------------------------------------------------- brax
def _install_device_put_replicated() -> None:
    """jax 0.10 removed jax.device_put_replicated, which brax 0.14.2's PPO calls: a one-host stand-in, here only."""
    import jax
    import jax.numpy as jnp

    if hasattr(jax, "device_put_replicated"):
        return

    def device_put_replicated(x, devices):
        # Placed by an identity pmap, so the arrays carry the sharding that Brax's pmapped epoch returns: a plain
        # jax.device_put gives single-device arrays, and Brax's epoch then compiled a second time on its second call
        # (measured: ~9 s inside Brax's second epoch, counted as training time before this was found).
        stacked = jax.tree.map(lambda leaf: jnp.stack([jnp.asarray(leaf)] * len(devices)), x)
        return jax.pmap(lambda tree: tree, axis_name="i", devices=devices)(stacked)  # brax ppo's axis name

    jax.device_put_replicated = device_put_replicated


def _brax_envs():
    with contextlib.redirect_stdout(io.StringIO()):  # mujoco's "Failed to import warp" prints
        from brax import envs
    return envs


BRAX_VARIANTS: dict[str, dict[str, Any]] = {
    "brax": {},
    # Brax's advantages are computed per unroll (5 steps, bootstrapped from the critic at the 6th observation, with
    # the current critic in every minibatch); jaxppo's over its whole rollout (40 steps here). The same update with
    # 40-step unrolls (batch 256 / 8 = 32 unrolls x 8 minibatches x 40 = 10,240 env steps) asks whether that is
    # what makes Brax learn faster in its first updates.
    "brax-unroll40": dict(unroll_length=40, batch_divisor=8),
    # At the notebook batch jaxppo's rollout is 80 steps (2048 envs x 80): Brax with unrolls that long (64 x 32 x 80).
    "brax-unroll80": dict(unroll_length=80, batch_divisor=16),
}
"""Brax's PPO as the script runs it ("brax") and variants of it: overrides of BRAX_PPO (batch_divisor divides the
scale's batch_size so that the env steps per update stay the same)."""


def run_brax(scale: str, task: str, backend: str | None, epochs: int, per_epoch: int,
             seed: int, variant: str = "brax") -> list[dict[str, Any]]:
    """Brax's PPO for `epochs` x `per_epoch` updates, evaluated after each epoch (and at 0)."""
    _install_device_put_replicated()
    from brax.training.agents.ppo import train as ppo

    env = _brax_envs().get_environment(task, **({"backend": backend} if backend else {}))
    rows: list[dict[str, Any]] = []
    last_walltime = [0.0]

    def progress(step: int, metrics: dict[str, Any]) -> None:
        walltime = float(metrics.get("training/walltime", 0.0))
        seconds = walltime - last_walltime[0]
        last_walltime[0] = walltime
        rows.append(dict(epoch=len(rows), env_steps=int(step), eval_return=float(metrics["eval/episode_reward"]),
                         train_seconds=walltime, sps=(per_epoch * steps / seconds) if step else float("nan")))
        print(f"  brax {task} seed {seed}: {rows[-1]}", flush=True)

    # num_evals = epochs + 1 and num_timesteps = epochs * per_epoch updates: per_epoch updates per eval epoch.
    steps = steps_per_update(scale)
    overrides = dict(BRAX_VARIANTS[variant])
    layout = dict(SCALES[scale])
    layout["batch_size"] //= overrides.pop("batch_divisor", 1)
    settings = {**BRAX_PPO, **overrides}
    assert layout["batch_size"] * layout["num_minibatches"] * settings["unroll_length"] == steps
    ppo.train(environment=env, num_timesteps=epochs * per_epoch * steps, num_evals=epochs + 1,
              num_eval_envs=EVAL_EPISODES, deterministic_eval=False, seed=seed, progress_fn=progress,
              **layout, **settings)
    return rows


# ------------------------------------------------------------------------------------------------- jaxppo
def jaxppo_config(variant: str, scale: str, task: str, backend: str | None, updates: int):
    """The PPOConfig of a variant."""
    from jaxppo import PPOConfig

    env_id = f"brax/{task}" + (f"@{backend}" if backend else "")
    return PPOConfig(env=env_id, total_timesteps=updates * steps_per_update(scale),
                     **{**jaxppo_base(scale), **VARIANTS[variant]})


def run_jaxppo(variant: str, scale: str, task: str, backend: str | None, epochs: int, per_epoch: int,
               seed: int) -> list[dict[str, Any]]:
    """jaxppo for `epochs` x `per_epoch` updates, evaluated as Brax evaluates (raw rewards) after each epoch."""
    import jax

    from jaxppo import HParams, make_evaluate
    from jaxppo.train import make_train_parts

    config = jaxppo_config(variant, scale, task, backend, epochs * per_epoch)
    parts = make_train_parts(config)
    state = jax.jit(parts.init)(jax.random.key(seed), HParams.from_config(config))
    run = jax.jit(lambda s: parts.run(s, per_epoch)).lower(state).compile()
    steps = per_epoch * config.batch_size
    evaluate = jax.jit(make_evaluate(config, EVAL_EPISODES, deterministic=False))  # raw (unscaled) returns
    eval_key = jax.random.key(10_000 + seed)

    def eval_return(state, index: int) -> float:
        result = evaluate(state.params, jax.random.fold_in(eval_key, index), state.normalizers)
        return float(np.mean(np.asarray(result.returns)))

    rows = [dict(epoch=0, env_steps=0, eval_return=eval_return(state, 0), train_seconds=0.0, sps=float("nan"))]
    total = 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        state, _ = jax.block_until_ready(run(state))
        seconds = time.perf_counter() - start
        total += seconds
        rows.append(dict(epoch=epoch, env_steps=epoch * steps, eval_return=eval_return(state, epoch),
                         train_seconds=total, sps=steps / seconds))
        print(f"  {variant} {task} seed {seed}: {rows[-1]}", flush=True)
    return rows


def run_trainer(trainer: str, scale: str, task: str, backend: str | None, epochs: int, per_epoch: int,
                seed: int) -> list[dict[str, Any]]:
    if trainer in BRAX_VARIANTS:
        return run_brax(scale, task, backend, epochs, per_epoch, seed, trainer)
    return run_jaxppo(trainer, scale, task, backend, epochs, per_epoch, seed)


def append_rows(rows: list[dict[str, Any]], stem: str = DEFAULT_STEM) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    csv_path = RESULTS / f"{stem}.csv"
    new = not csv_path.exists()
    with csv_path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def command_run(args: argparse.Namespace) -> None:
    for i, seed in enumerate(args.seeds):
        order = args.trainers if i % 2 == 0 else list(reversed(args.trainers))  # interleaved, order alternating
        for trainer in order:
            start = time.perf_counter()
            rows = run_trainer(trainer, args.scale, args.task, args.backend, args.epochs, args.updates_per_eval, seed)
            for row in rows:
                row.update(trainer=trainer, scale=args.scale, task=args.task, backend=args.backend or "default",
                           seed=seed)
            append_rows(rows, args.results)
            print(f"{trainer} {args.task} seed {seed}: eval {[round(r['eval_return'], 1) for r in rows]} "
                  f"steady sps {steady_sps(rows):.0f} ({time.perf_counter() - start:.0f} s)", flush=True)


# ------------------------------------------------------------------------------------------------- report
def steady_sps(rows: list[dict[str, Any]]) -> float:
    """Env steps / training seconds over the epochs after the first (whose time includes brax's compile)."""
    ordered = sorted(rows, key=lambda r: int(r["epoch"]))
    if len(ordered) < 3:
        return float("nan")
    first, last = ordered[1], ordered[-1]
    return (int(last["env_steps"]) - int(first["env_steps"])) / (float(last["train_seconds"])
                                                                 - float(first["train_seconds"]))


def mean_se(values: list[float]) -> tuple[float, float]:
    x = np.asarray(values, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def command_report(args: argparse.Namespace) -> None:
    with (RESULTS / f"{args.results}.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    groups: dict[tuple[str, str, str], dict[int, list[dict[str, Any]]]] = {}
    for row in rows:
        task = f"{row['task']}@{row['backend']} ({row['scale']})"
        groups.setdefault((task, row["trainer"]), {}).setdefault(int(row["seed"]), []).append(row)
    lines = ["| task (scale) | trainer | seeds | env steps | eval return at each evaluation (mean over seeds) | final "
             "(± se) | steady steps/s (± se) | steps, s to Brax's final |", "|---|---|---:|---:|---|---:|---:|---:|"]
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    brax_final: dict[str, float] = {}
    for (task, trainer), seeds in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "brax", kv[0][1])):
        length = min(len(r) for r in seeds.values())
        ordered = [sorted(rows, key=lambda r: int(r["epoch"]))[:length] for rows in seeds.values()]
        returns = np.array([[float(r["eval_return"]) for r in rows] for rows in ordered])
        steps = np.array([int(r["env_steps"]) for r in ordered[0]])
        mean = returns.mean(0)
        se = returns.std(0, ddof=1) / math.sqrt(len(returns)) if len(returns) > 1 else np.full(length, np.nan)
        curves.setdefault(task, {})[trainer] = (steps, mean, se)
        sps = [steady_sps(s) for s in seeds.values()]
        sps_mean, sps_se = mean_se(sps)
        if trainer == "brax":
            brax_final[task] = float(mean[-1])
        target = brax_final.get(task)
        reach = "—"
        if target is not None:
            hit = np.nonzero(mean >= target - 1e-6)[0]
            if len(hit):
                reach = f"{steps[hit[0]]:,} steps, {steps[hit[0]] / sps_mean:.0f} s"
            else:
                reach = "not reached"
        curve = ", ".join(f"{m:.0f}" for m in mean)
        pm = (lambda m, e, f: f"{m:{f}} ± {e:{f}}" if np.isfinite(e) else f"{m:{f}}")  # noqa: E731
        lines.append(f"| {task} | {trainer} | {len(returns)} | {steps[-1]:,} | {curve} | {pm(mean[-1], se[-1], '.0f')} | "
                     f"{pm(sps_mean, sps_se, ',.0f')} | {reach} |")
    table = "\n".join(lines) + "\n"
    (RESULTS / f"{args.results}.md").write_text(table)
    print(table)
    _plot(curves, RESULTS / f"{args.results}.png")


def _plot(curves, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for ax, (task, trainers) in zip(axes[0], sorted(curves.items())):
        for trainer, (steps, mean, se) in sorted(trainers.items()):
            ax.plot(steps / 1e6, mean, marker="o", ms=3, label=trainer)
            if np.isfinite(se).all():
                ax.fill_between(steps / 1e6, mean - se, mean + se, alpha=0.2)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("env steps (M)")
        ax.set_ylabel("eval return (128 stochastic episodes)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate; appends to experiments/results/brax_parity.csv")
    run.add_argument("--task", default="inverted_pendulum")
    run.add_argument("--backend", default=None, help="brax physics pipeline (both trainers): positional, spring...")
    run.add_argument("--scale", choices=list(SCALES), default="notebook", help="batch layout (see the docstring)")
    run.add_argument("--epochs", type=int, default=6, help="evaluations after the one at step 0")
    run.add_argument("--updates-per-eval", type=int, default=1, help="updates between evaluations")
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument("--trainers", nargs="+", default=["brax", "jaxppo-preset"],
                     choices=[*BRAX_VARIANTS, *VARIANTS])
    report = sub.add_parser("report", help="table (brax_parity.md) and curves (brax_parity.png) from the CSV")
    for command in (run, report):
        command.add_argument("--results", default=DEFAULT_STEM, help="file stem in experiments/results/")
    args = parser.parse_args(argv)
    {"run": command_run, "report": command_report}[args.command](args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
