"""Named per-environment settings (`jaxppo train --preset breakout-minatar`) and published reference returns.

A preset is a set of `PPOConfig` field values for one environment, aimed at reaching (or beating) the reference PPO
return published in the gymnax README at the preset's `total_timesteps` (its "full" budget, sized for a GPU).
`experiments/returns_table.py` measures how far each gymnax preset gets (`experiments/results/returns.md`), and
docs/env_suites.md and experiments/memory_tasks.py the others; comments below say where a preset is known to fall
short and why. Preset names are environment ids in lower case ("cartpole-v1", "breakout-minatar", "brax/ant",
"jaxppo/cartpole-po-v1"); the exact id is accepted too. Explicit fields given next to a preset win over the preset's
values. Every gymnax environment has one except MNISTBandit-bsuite (downloads MNIST) and FrozenLake-misc (Discrete
observations, which jaxppo does not take).

    config = preset_config("pendulum-v1", total_timesteps=200_000)
"""

from __future__ import annotations

import difflib
from typing import Any

from jaxppo.config import PPOConfig

def _minatar(env: str) -> dict[str, Any]:
    """The shared MinAtar preset values for one game (see the MinAtar comment in PRESETS)."""
    return dict(env=env, num_envs=64, num_steps=128, total_timesteps=10_000_000, lr=5e-4, anneal_lr=False,
                num_epochs=4, num_minibatches=8, gamma=0.999, ent_coef=0.01, activation="relu", network="mlp",
                hidden_sizes=(256, 256))


def _brax_locomotion(env: str, **changes: Any) -> dict[str, Any]:
    """Brax's locomotion mapping (see the ant comment in PRESETS) for one task, with that task's measured changes."""
    return dict(env=env, num_envs=4096, num_steps=80, total_timesteps=50_000_000, lr=3e-4, anneal_lr=False,
                num_epochs=4, num_minibatches=32, gamma=0.97, gae_lambda=0.95, clip_eps=0.3, ent_coef=0.01,
                hidden_sizes=(256, 256), activation="silu", distribution="tanh_gaussian", scale_type="state_dependent",
                scale_fn="softplus", min_scale=1e-3, init_scale=0.6931471805599453, normalize_observations=True,
                normalize_rewards=True, recompute_advantages=True, **changes)


def _cartpole_po_gru(**changes: Any) -> dict[str, Any]:
    """The CartPole-PO GRU preset's values (see its comment in PRESETS), with a variant's changes."""
    return dict(env="jaxppo/CartPole-PO-v1", num_envs=16, num_steps=128, total_timesteps=1_000_000, lr=2.5e-4,
                num_epochs=4, num_minibatches=4, ent_coef=0.0, memory="gru", memory_size=128,
                normalize_rewards=True, **changes)


PRESETS: dict[str, dict[str, Any]] = {
    # ------------------------------------------------------------------------------------------ classic control
    "cartpole-v1": dict(env="CartPole-v1", num_envs=4, num_steps=128, total_timesteps=500_000, lr=2.5e-4,
                        num_epochs=4, num_minibatches=4, ent_coef=0.01),
    # gamma 0.98 (not 0.99) and no entropy bonus: about -64 at 2M steps, -69 at 1M (4 seeds), vs. -85 with the
    # CartPole settings.
    "acrobot-v1": dict(env="Acrobot-v1", num_envs=16, num_steps=128, total_timesteps=2_000_000, lr=2e-3,
                       num_epochs=8, num_minibatches=8, gamma=0.98, ent_coef=0.0),
    # About -155 for the greedy policy at 1M steps (4 seeds x 64 episodes; gamma 0.9/0.99, lr 1e-3, 128-unit layers,
    # a narrower initial policy or 32 envs did no better). The best achievable mean over random starts is about
    # -134 (experiments/pendulum_ceiling.py: dynamic programming with the true model), so the README's -130 is
    # within noise of the optimum and PPO stays ~20 short of it.
    "pendulum-v1": dict(env="Pendulum-v1", num_envs=16, num_steps=128, total_timesteps=1_000_000, lr=3e-4,
                        num_epochs=10, num_minibatches=32, ent_coef=0.0, gamma=0.95, normalize_observations=True,
                        normalize_rewards=True),
    # Observation and reward normalisation are what make PPO find the flag here (rl-baselines3-zoo's settings:
    # 16 envs x 16 steps, lambda 0.98, no entropy bonus): -116.6 training / -119 greedy at 1M steps (4 seeds), vs.
    # -150 +- 50 with gymnax-blines' unnormalised settings.
    "mountaincar-v0": dict(env="MountainCar-v0", num_envs=16, num_steps=16, total_timesteps=1_000_000, lr=3e-4,
                           num_epochs=4, num_minibatches=4, gamma=0.99, gae_lambda=0.98, ent_coef=0.0,
                           normalize_observations=True, normalize_rewards=True),
    # gymnax-blines' layout plus a wide initial policy (init_log_std 0.5) and observation normalisation, so that
    # exploration finds the flag: 91.5 +- 0.7 at 300k steps (4 seeds) against the README's 92.
    "mountaincarcontinuous-v0": dict(env="MountainCarContinuous-v0", num_envs=32, num_steps=16,
                                     total_timesteps=1_000_000, lr=5e-4, num_epochs=4, num_minibatches=4,
                                     ent_coef=0.01, max_grad_norm=1.0, init_log_std=0.5,
                                     normalize_observations=True),
    # ------------------------------------------------------------------------------------------------- MinAtar
    # gymnax-blines' MinAtar settings: an MLP (2 x 256, ReLU) on the flattened 10x10xC frame, gamma 0.999 and a
    # constant learning rate. One seed each at 10M steps on the 2-core CPU (greedy eval, 16 episodes): Breakout
    # 91 (training 72) vs. the README's 28, where the earlier preset (the 16-filter CNN torso, gamma 0.99, an
    # annealed rate) plateaued at 23.5; Asterix 22.5 (training 11.8, still rising) vs. 15. The MLP also trains ~7x
    # faster than the CNN on a CPU (41k vs. 5.8k env steps/s). docs/results.md has every game; Seaquest-MinAtar
    # has no README reference.
    "asterix-minatar": _minatar("Asterix-MinAtar"),
    "breakout-minatar": _minatar("Breakout-MinAtar"),
    "freeway-minatar": _minatar("Freeway-MinAtar"),
    "seaquest-minatar": _minatar("Seaquest-MinAtar"),
    "spaceinvaders-minatar": _minatar("SpaceInvaders-MinAtar"),
    # -------------------------------------------------------------------------------------------------- bsuite
    "catch-bsuite": dict(env="Catch-bsuite", num_envs=16, num_steps=64, total_timesteps=500_000, lr=1e-3,
                         num_epochs=4, num_minibatches=4, ent_coef=0.0),
    # Going left every step returns exactly 0 (the README's PPO); at size 8 PPO does find the treasure (~0.99).
    "deepsea-bsuite": dict(env="DeepSea-bsuite", num_envs=16, num_steps=64, total_timesteps=500_000, lr=1e-3,
                           num_epochs=4, num_minibatches=4, ent_coef=0.0),
    # The cue is shown in the first observations only: a memoryless policy expects exactly 0 (measured: -0.01 over
    # 4 seeds). With a GRU every seed recalls it: 1.0 at 500k steps (4 seeds; gymnax's reference is 0.1).
    "memorychain-bsuite": dict(env="MemoryChain-bsuite", num_envs=16, num_steps=64, total_timesteps=500_000,
                               lr=1e-3, num_epochs=4, num_minibatches=4, ent_coef=0.01, memory="gru",
                               memory_size=64),
    # Nine of its ten rewards are +-1 coin flips: the best expected return is exactly the README's 1, and a finite
    # evaluation sits above or below it by chance (the returns table calls that "within noise").
    "umbrellachain-bsuite": dict(env="UmbrellaChain-bsuite", num_envs=16, num_steps=64, total_timesteps=500_000,
                                 lr=1e-3, num_epochs=4, num_minibatches=4, ent_coef=0.01),
    # The first action picks when the one reward comes (1, 3, 10, 30 or 100 steps later); the earliest is also the
    # largest (1.1 vs. 1.0). gamma 0.9 makes the difference plain (1.1 vs. at most 0.81): every seed picks it
    # (1.1 at 500k steps), where gamma 0.99 left half the seeds on a 1.0 arm.
    "discountingchain-bsuite": dict(env="DiscountingChain-bsuite", num_envs=16, num_steps=100,
                                    total_timesteps=500_000, lr=1e-3, num_epochs=4, num_minibatches=4,
                                    gamma=0.9, ent_coef=0.01),
    # gymnax reshuffles the arms at every reset and the observation is constant: every policy expects 0.5, so
    # there is nothing to learn (kept for completeness).
    "simplebandit-bsuite": dict(env="SimpleBandit-bsuite", num_envs=16, num_steps=100, total_timesteps=200_000,
                                lr=1e-3, num_epochs=4, num_minibatches=4, ent_coef=0.0),
    # ---------------------------------------------------------------------------------------------------- misc
    "fourrooms-misc": dict(env="FourRooms-misc", num_envs=32, num_steps=128, total_timesteps=1_000_000, lr=1e-3,
                           num_epochs=4, num_minibatches=8, ent_coef=0.01),
    # The next six are meta-RL / ES tasks with no PPO reference: the MLP has no memory, so it can only learn the
    # average task (a lower bound on what a recurrent agent reaches).
    "metamaze-misc": dict(env="MetaMaze-misc", num_envs=32, num_steps=128, total_timesteps=1_000_000, lr=1e-3,
                          num_epochs=4, num_minibatches=8, ent_coef=0.01),
    "pointrobot-misc": dict(env="PointRobot-misc", num_envs=32, num_steps=100, total_timesteps=1_000_000, lr=3e-4,
                            num_epochs=10, num_minibatches=32, ent_coef=0.0, normalize_observations=True,
                            normalize_rewards=True),
    "bernoullibandit-misc": dict(env="BernoulliBandit-misc", num_envs=32, num_steps=100, total_timesteps=500_000,
                                 lr=1e-3, num_epochs=4, num_minibatches=4, ent_coef=0.01),
    "gaussianbandit-misc": dict(env="GaussianBandit-misc", num_envs=32, num_steps=100, total_timesteps=500_000,
                                lr=1e-3, num_epochs=4, num_minibatches=4, ent_coef=0.01),
    "reacher-misc": dict(env="Reacher-misc", num_envs=32, num_steps=100, total_timesteps=1_000_000, lr=3e-4,
                         num_epochs=10, num_minibatches=32, ent_coef=0.0, normalize_observations=True,
                         normalize_rewards=True),
    "swimmer-misc": dict(env="Swimmer-misc", num_envs=32, num_steps=128, total_timesteps=2_000_000, lr=3e-4,
                         num_epochs=10, num_minibatches=32, ent_coef=0.0, gamma=0.995,
                         normalize_observations=True, normalize_rewards=True),
    "pong-misc": dict(env="Pong-misc", num_envs=64, num_steps=128, total_timesteps=5_000_000, lr=5e-4, num_epochs=4,
                      num_minibatches=8, gamma=0.99, ent_coef=0.01, activation="relu"),
    # ================================================================ environment suites (docs/env_suites.md)
    # Optional extras: pip install -e ".[envs]". Full budgets are sized for a GPU; docs/env_suites.md has what ran on
    # the 2-core CPU and the published numbers each preset is measured against.
    # Brax, default 'generalized' pipeline: brax's own PPO settings (notebooks/training.ipynb) mapped onto jaxppo.
    # An update is brax's batch_size x num_minibatches x unroll_length = 327,680 env steps in 32 minibatches of
    # 10,240; observation normalisation as there, reward normalisation instead of its fixed reward_scaling; one
    # 256x256 SiLU (swish) MLP for actor and critic where brax has 4x32 and 5x256; clip 0.3, brax's default.
    # ant: Brax's policy distribution (tanh-squashed Gaussian, state-dependent softplus scale + 0.001 from log 2).
    # Against Brax's PPO (positional pipeline, 16x smaller batch, 410k steps, seeds 0-2; docs/results.md section
    # 12): 779 +- 29 vs 681 +- 53; with the Gaussian of the other presets (state-independent std, clipped
    # actions) -143 +- 59 (seeds 0-1): it had not learned to walk. At Brax's notebook batch (2048 envs x 80 steps,
    # 983k steps, 3 seeds) advantages recomputed before every epoch were at or above the same mapping without them
    # at every evaluation on every seed: 211 +- 5 vs 201 +- 10 (Brax's PPO 168 +- 10).
    "brax/ant": _brax_locomotion("brax/ant"),
    "brax/halfcheetah": dict(env="brax/halfcheetah", num_envs=2048, num_steps=160, total_timesteps=50_000_000,
                             lr=3e-4, anneal_lr=False, num_epochs=8, num_minibatches=32, gamma=0.95,
                             gae_lambda=0.95, clip_eps=0.3, ent_coef=0.001, hidden_sizes=(256, 256),
                             activation="silu", normalize_observations=True, normalize_rewards=True),
    # brax's notebook trains hopper with SAC, not PPO: these are the ant settings. Against Brax's PPO with the same
    # settings (positional pipeline, 16x smaller batch, 614k steps, 3 seeds; docs/results.md section 12): 1191 +- 22
    # vs 1084 +- 110 at 1.49x its steps/s with the ant mapping's Gaussian. At Brax's notebook batch (2048 envs x 80
    # steps, nearer this preset's 4096 x 80) that Gaussian fell behind Brax's PPO (1.97M steps, 3 seeds: 611 +- 24
    # vs 909 +- 134); Brax's tanh-squashed distribution with advantages recomputed before every epoch (the ant
    # preset's settings) was above it at every evaluation on every seed: 892 +- 52 at 1.41x Brax's steps/s, but
    # behind Brax's PPO from 655k to 1.64M steps. Without value-loss clipping too (as Brax's PPO, and the pendulum
    # presets): 998 +- 3 at 1.97M, higher at 655k, 1.31M, 1.64M and 1.97M on every seed (lower at 983k: 554 +- 38
    # vs 595 +- 30), behind Brax's PPO only at 983k and 1.31M (section 12).
    "brax/hopper": _brax_locomotion("brax/hopper", clip_value_loss=False),
    # The pendulums, from experiments/brax_parity.py (docs/results.md section 12; 3 seeds at a 16x smaller batch,
    # single-factor ablations on the ant mapping above): Brax's notebook settings at its notebook batch (2048 envs x
    # 80 steps = 163,840 env steps in 32 minibatches).
    # inverted_pendulum: the ant mapping with Brax's policy distribution (tanh-squashed Gaussian, state-dependent
    # softplus scale + 0.001 from log 2) was at 1000 on every seed from 205k steps (the ant mapping: 719; Brax's
    # whole setup: 1000 too, at 0.6x the steps/s for its 5x256 critic). No other single factor did it. Adam's
    # epsilon at Brax's 1e-8 (optax.adam's default; jaxppo's is 1e-5) then learned faster in the first 10 updates:
    # 386 vs 299 at 102k steps over 6 seeds (higher on 5 of 6; Brax's PPO 428 +- 138), 1000 from 205k as before.
    # At the notebook batch itself that mapping was behind Brax's PPO at 983k steps (206 vs 996, 3 seeds each);
    # advantages recomputed before every epoch (Brax recomputes them for every minibatch) without value-loss and
    # gradient-norm clipping (Brax's defaults) reached 919 +- 34 there (each alone: 336, and 592 over 2 seeds),
    # and 355 +- 30 vs 386 +- 44 at 102k at the small batch (within noise; 962-1000 from 205k).
    # Brax's initialiser for the hidden layers (LeCun-uniform, variance 1 / fan_in, instead of orthogonal gain
    # sqrt 2) then closed the rest at the notebook batch: 174 +- 21, 886 +- 36, 982 +- 8 at 655k / 819k / 983k
    # (without it 103, 340, 913; Brax's PPO 282 +- 112, 889 +- 93, 993 +- 4; 3 seeds each, an eval per update).
    "brax/inverted_pendulum": dict(env="brax/inverted_pendulum", num_envs=2048, num_steps=80,
                                   total_timesteps=2_000_000, lr=3e-4, anneal_lr=False, num_epochs=4,
                                   num_minibatches=32, gamma=0.97, gae_lambda=0.95, clip_eps=0.3, ent_coef=0.01,
                                   hidden_sizes=(256, 256), activation="silu", hidden_init="lecun_uniform",
                                   distribution="tanh_gaussian", scale_type="state_dependent", scale_fn="softplus",
                                   min_scale=1e-3, init_scale=0.6931471805599453, adam_eps=1e-8,
                                   normalize_observations=True, normalize_rewards=True, recompute_advantages=True,
                                   clip_value_loss=False, max_grad_norm=1e6),
    # inverted_double_pendulum: the ant mapping with Brax's network sizes (4x32 actor, 5x256 critic; Gaussian,
    # reward normalisation and both clips kept) reached 2389 +- 271 at 410k steps where the ant mapping was at
    # 1480 +- 84 and Brax's PPO at 743 +- 62; the tanh distribution (1012), no gradient clipping (847) and the fixed
    # reward scale (453) each made it worse. At the notebook batch, advantages recomputed before every epoch:
    # 1757 +- 40 at 1.97M steps against 1307 +- 26 without (Brax's PPO 1060 +- 161), higher from 983k on; and
    # without value-loss clipping (targets that follow the critic, as on inverted_pendulum): 2466 +- 160, higher
    # from 655k on, on every seed (Brax's PPO: level at 983k, behind from 1.31M). The gradient-norm clip stays:
    # without both clips 557 (seed 0).
    "brax/inverted_double_pendulum": dict(env="brax/inverted_double_pendulum", num_envs=2048, num_steps=80,
                                          total_timesteps=20_000_000, lr=3e-4, anneal_lr=False, num_epochs=4,
                                          num_minibatches=32, gamma=0.97, gae_lambda=0.95, clip_eps=0.3,
                                          ent_coef=0.01, actor_hidden_sizes=(32, 32, 32, 32),
                                          critic_hidden_sizes=(256,) * 5, activation="silu",
                                          normalize_observations=True, normalize_rewards=True,
                                          recompute_advantages=True, clip_value_loss=False),
    # Jumanji Knapsack-v1 (50 items, budget 12.5; masks): undiscounted, as Jumanji's A2C config. The MLP sees the
    # flattened (weights, values, packed) vector; Jumanji's A2C uses a 6-block transformer over the items.
    "jumanji/knapsack-v1": dict(env="jumanji/Knapsack-v1", num_envs=64, num_steps=64, total_timesteps=10_000_000,
                                lr=3e-4, num_epochs=4, num_minibatches=8, gamma=1.0, gae_lambda=0.95,
                                ent_coef=0.01, hidden_sizes=(256, 256), activation="relu"),
    # Craftax-Classic, symbolic: the Craftax paper's PPO (Craftax_Baselines ppo.py defaults: 1024 envs x 64 steps,
    # lr 2e-4 annealed, lambda 0.8, grad norm 1.0, 3 x 512 tanh layers) at its 1e9-step budget.
    "craftax/craftax-classic-symbolic-v1": dict(env="craftax/Craftax-Classic-Symbolic-v1", num_envs=1024,
                                                num_steps=64, total_timesteps=1_000_000_000, lr=2e-4,
                                                num_epochs=4, num_minibatches=8, gamma=0.99, gae_lambda=0.8,
                                                ent_coef=0.01, max_grad_norm=1.0, hidden_sizes=(512, 512, 512)),
    # ============================================================ end of environment suites
    # ================================================================ this project's environments (jaxppo/...)
    # CartPole with the velocities hidden ([x, theta] only): a GRU infers them from successive observations. No
    # entropy bonus: with 0.01 the sampled policy peaked near 480 at 0.7M steps and fell back to ~410 by 2M (greedy
    # 500 throughout). With 0 at 1M: 8 fresh seeds end at 461 +- 19 sampled, 499.4 greedy. Without memory: ~48.
    # Normalised rewards since 2026-12-07: 475 reached at a median 201k env steps instead of 672k on the table's 8
    # seeds (final 495 vs 467, greedy 500 both), and on 8 held-out seeds (key 2000) at 240k instead of 638k (final
    # 480 vs 467, greedy 499.5 vs 500). docs/results.md, section 11.
    "jaxppo/cartpole-po-v1": _cartpole_po_gru(),
    # ========================================= variants: another core or network on a task (name: <preset>/<variant>)
    # The memory tasks on the linear recurrent core (memory="lru", jaxppo.memory.ResetLRU), otherwise the GRU
    # presets' settings; narrower than the GRU because the LRU's cost on a CPU grows with its width (its projections
    # and readout run on every step of a sequence at once). MemoryChain at width 16 after one 64-wide torso layer:
    # 1.0 on 8 of 8 fresh seeds (and on its 30-step form), 0.99 reached at a median 27k steps (width 32: 20k; the GRU
    # preset: 20k), 6.1x the GRU preset's steps/s and 0.89x its feed-forward network's (width 32: 4.2x, 0.61x). The
    # shape chosen on 8 tuning seeds, where widths 16 / 32 after one 32- or 64-wide layer all solved both.
    # CartPole-PO at width 32 after one 64-wide layer, lr 2e-3 (chosen on 12 tuning seeds, never the table's:
    # 2.5e-4, the GRU's, ended at 346 sampled / 400 greedy on 4 of them; on 8 more, 1e-3 and 3e-3 each left seeds at
    # 331-385 greedy, 2e-3 none below 494): greedy 483 on the table's 8 seeds (worst 366; width 64 after two layers,
    # the same hour: 497, worst 488), 475 reached in 0.54x the width-64 preset's wall clock, at 0.57x the
    # feed-forward network's steps/s (width 64: 0.31-0.34x). With normalised rewards (2026-12-07; chosen on the 8
    # tuning seeds: final 500 on every one, 475 at a median 159k steps instead of 580k): on the table's 8 seeds
    # final 494 (worst 471), greedy 498 (worst 485), 475 at a median 171k steps instead of 559k. docs/results.md,
    # section 11.
    "memorychain-bsuite/lru": dict(env="MemoryChain-bsuite", num_envs=16, num_steps=64, total_timesteps=500_000,
                                   lr=1e-3, num_epochs=4, num_minibatches=4, ent_coef=0.01, memory="lru",
                                   memory_size=16, hidden_sizes=(64,)),
    "jaxppo/cartpole-po-v1/lru": dict(env="jaxppo/CartPole-PO-v1", num_envs=16, num_steps=128,
                                      total_timesteps=1_000_000, lr=2e-3, num_epochs=4, num_minibatches=4,
                                      ent_coef=0.0, memory="lru", memory_size=32, hidden_sizes=(64,),
                                      normalize_rewards=True),
    # CartPole-PO on ONE GRU for both heads (memory_shared, PureJaxRL's ppo_rnn.py shape: 1.8x the GRU preset's
    # steps/s), otherwise the GRU preset. Without normalised rewards the shared core does not learn it (greedy 177
    # on the table's 8 seeds): the value loss's large gradients dominate the shared layers. With them, on the table's
    # 8 seeds: final 497 (worst 478), greedy 500 on every seed, 475 reached at a median 216k steps (the GRU preset:
    # 495, 500, 201k); on 8 held-out seeds (key 2000): 484 (456), greedy 499.5, 216k (the GRU preset: 480, 499.5,
    # 240k). docs/results.md, section 11.
    "jaxppo/cartpole-po-v1/gru-shared": _cartpole_po_gru(memory_shared=True),
}
"""Preset name -> PPOConfig field values (fields not named keep the PPOConfig default)."""

SKIPPED_ENVS: dict[str, str] = {
    "MNISTBandit-bsuite": "builds by downloading MNIST (no network access assumed); not a PPO benchmark",
    "FrozenLake-misc": "Discrete observation space; jaxppo needs a Box (vector or image) observation",
}
"""gymnax ids with no preset, and why."""

REFERENCE_RETURNS: dict[str, float] = {
    "Acrobot-v1": -80.0,
    "Pendulum-v1": -130.0,
    "CartPole-v1": 500.0,
    "MountainCar-v0": -118.0,
    "MountainCarContinuous-v0": 92.0,
    "Asterix-MinAtar": 15.0,
    "Breakout-MinAtar": 28.0,
    "Freeway-MinAtar": 58.0,
    "SpaceInvaders-MinAtar": 131.0,
    "Catch-bsuite": 1.0,
    "DeepSea-bsuite": 0.0,
    "MemoryChain-bsuite": 0.1,
    "UmbrellaChain-bsuite": 1.0,
    "DiscountingChain-bsuite": 1.1,
    "FourRooms-misc": 1.0,
}
"""Return of the trained PPO checkpoints listed in the gymnax README ("Ckpt (Return)" column, gymnax-blines
agents), by gymnax id; environments with no PPO entry there are absent."""


def preset_names() -> tuple[str, ...]:
    """Every preset name, sorted."""
    return tuple(sorted(PRESETS))


def gymnax_preset_names() -> tuple[str, ...]:
    """The presets of gymnax environments (ids without a suite prefix), sorted: what the returns table covers."""
    return tuple(name for name in preset_names() if "/" not in name)


def preset_values(name: str) -> dict[str, Any]:
    """The PPOConfig field values of a preset (a copy); ValueError naming close matches for an unknown name."""
    key = name.lower()
    if key not in PRESETS:
        close = difflib.get_close_matches(key, preset_names(), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(preset_names())}"
        raise ValueError(f"preset={name!r}: no such preset; {hint}")
    return dict(PRESETS[key])


def preset_config(name: str, **overrides: Any) -> PPOConfig:
    """PPOConfig of a preset, with `overrides` (any PPOConfig fields) taking precedence.

    Raises:
      ValueError: unknown preset, unknown field name, or a resulting config that fails validation.
    """
    fields = set(PPOConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"preset_config({name!r}): unknown PPOConfig field(s) {', '.join(unknown)}")
    return PPOConfig(**{**preset_values(name), **overrides})
