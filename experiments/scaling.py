"""Scaling of PPO training throughput with the number of environments and with the number of devices.

Two measurements, CartPole-v1, num_steps=32, num_minibatches=4, num_epochs=4, in one process:

1. Env scaling, one device. For each num_envs in --envs (4 ... 4096): env steps per second of a whole compiled
   training run (`jax.jit(train).lower(key).compile()` first, then one run of the compiled executable timed with
   `jax.block_until_ready`: steady state, no compile time), and of the *pure rollout limit* of the same setting:
   the same environments stepped by the same policy network with its initial parameters, for the same number of
   updates, no learning (`make_agent` + `init_state` + `rollout`, scanned with `lax.scan`). ratio = training /
   rollout limit is the share of the rollout speed that survives learning.
2. Device scaling, for each D in --devices (1, 2, 4):
   - strong scaling: a fixed global batch of 256 envs x 32 steps split over D devices;
     efficiency = (steps/s with D devices / D) / (steps/s of the plain single-device trainer);
   - weak scaling: 64 envs per device (64 * D envs in all), the same number of updates for every D;
     efficiency = steps/s per device relative to the plain single-device trainer with 64 envs.
   The baseline (parallel "single", the D=1 point) is `make_train` with num_devices=1, which does not map over
   devices; with num_devices=D > 1 `make_train` itself runs the same per-device program on every device through
   `jax.shard_map` (parallel "shard_map"). replicas_in_sync is the trainer's check (`check_replicas=True`) that
   parameters stayed identical on every device after every update.

Each point runs max(20 updates, enough updates for 200k env steps) times --budget-scale (at least one update).

On a CPU-only host the devices are fake: run as a script, this file sets
XLA_FLAGS=--xla_force_host_platform_device_count=N (N = --fake-cpu-devices, default 8) before jax is imported,
unless XLA_FLAGS already sets a device count or N is 0. Fake CPU devices share the host's cores, so little or no
speed-up is expected there: on CPU this exercises the measurement harness, which on a GPU/TPU host measures real
scaling. Keep fake devices to spare (8 fake, at most 4 used): XLA:CPU was seen to deadlock when every fake device
is busy in collectives, so on CPU the script refuses --devices that would use them all.

Run from the repository root:

    .venv/bin/python experiments/scaling.py                                   # CPU host: 8 fake devices, all points
    .venv/bin/python experiments/scaling.py --budget-scale 0.1 --envs 4 64 --devices 1 2   # quick check
    .venv/bin/python experiments/scaling.py --fake-cpu-devices 0              # GPU/TPU host: its real devices
    .venv/bin/python experiments/scaling.py --fake-cpu-devices 0 --skip-envs --devices 1 2 4 8   # 8-GPU host

Outputs (in --out-dir, default experiments/results, created if missing): scaling_envs.csv, scaling_devices.csv
(full precision; a skipped part's file is not written) and scaling.png (steps/s against num_envs, log-log; scaling
efficiency against devices). The tables are also printed to stdout, markdown style. Absolute steps/s are noisy on
a shared machine; the header prints the load average at the start.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple, Sequence

FAKE_DEVICE_FLAG = "--xla_force_host_platform_device_count"
DEFAULT_ENVS = (4, 16, 64, 256, 1024, 4096)
DEFAULT_DEVICES = (1, 2, 4)
DEFAULT_FAKE_CPU_DEVICES = 8
STRONG_NUM_ENVS = 256  # global batch of the strong-scaling runs: STRONG_NUM_ENVS * NUM_STEPS env steps per update
WEAK_ENVS_PER_DEVICE = 64


def build_parser() -> argparse.ArgumentParser:
    """The command line; needs no jax, so it can run before XLA_FLAGS is set."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("experiments/results"),
                        help="folder for scaling_envs.csv, scaling_devices.csv and scaling.png (created)")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiplies the updates of every point (base: max(20 updates, 200k env steps))")
    parser.add_argument("--envs", type=int, nargs="+", default=list(DEFAULT_ENVS), metavar="N",
                        help="num_envs values of the env-scaling part")
    parser.add_argument("--devices", type=int, nargs="+", default=list(DEFAULT_DEVICES), metavar="D",
                        help="device counts of the device-scaling part")
    parser.add_argument("--fake-cpu-devices", type=int, default=DEFAULT_FAKE_CPU_DEVICES, metavar="N",
                        help="fake N CPU devices via XLA_FLAGS unless XLA_FLAGS sets a count already; 0 on a "
                             "GPU/TPU host")
    parser.add_argument("--skip-envs", action="store_true", help="skip the env-scaling part")
    parser.add_argument("--skip-devices", action="store_true", help="skip the device-scaling part")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags (sizes only; device counts are checked once jax knows the devices)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.budget_scale > 0 and math.isfinite(args.budget_scale)):
        parser.error(f"--budget-scale {args.budget_scale}: must be a positive number")
    if any(n < 1 for n in args.envs):
        parser.error(f"--envs {args.envs}: every value must be a positive integer")
    bad_devices = [d for d in args.devices if d < 1 or STRONG_NUM_ENVS % d]
    if bad_devices:
        parser.error(f"--devices {bad_devices}: each must be a positive divisor of the strong-scaling batch of "
                     f"{STRONG_NUM_ENVS} envs")
    if args.fake_cpu_devices < 0:
        parser.error(f"--fake-cpu-devices {args.fake_cpu_devices}: must be >= 0")
    args.envs = sorted(set(args.envs))
    args.devices = sorted(set(args.devices))
    return args


def request_fake_cpu_devices(count: int) -> None:
    """Add FAKE_DEVICE_FLAG=count to XLA_FLAGS, unless count is 0 or XLA_FLAGS already sets a device count.

    Must run before jax starts its CPU backend; the flag only affects the CPU (host) platform.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if count > 0 and FAKE_DEVICE_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {FAKE_DEVICE_FLAG}={count}".strip()


if __name__ == "__main__":
    # Before jax is imported; parsing here also answers --help and flag errors without starting jax.
    request_fake_cpu_devices(parse_args().fake_cpu_devices)

import common  # noqa: E402
import jax  # noqa: E402  (after XLA_FLAGS)

from jaxppo.config import PPOConfig  # noqa: E402
from jaxppo.train import make_train  # noqa: E402

ENV_ID = "CartPole-v1"
NUM_STEPS = 32
NUM_MINIBATCHES = 4
MIN_UPDATES = 20
MIN_ENV_STEPS = 200_000


class EnvRow(NamedTuple):
    """One num_envs point of the env-scaling part (one device)."""

    num_envs: int
    num_steps: int
    num_updates: int
    env_steps: int
    compile_s: float  # training program
    train_s: float
    train_steps_per_s: float
    rollout_s: float
    rollout_steps_per_s: float
    ratio: float  # train_steps_per_s / rollout_steps_per_s


class DeviceRow(NamedTuple):
    """One (scaling, num_devices) point of the device-scaling part."""

    scaling: str  # "strong" (fixed global batch) or "weak" (fixed batch per device)
    parallel: str  # "single" (make_train on one device, the baseline) or "shard_map" (make_train over D devices)
    num_devices: int
    num_envs: int  # over all devices
    envs_per_device: int
    num_steps: int
    num_updates: int
    env_steps: int
    compile_s: float
    run_s: float
    steps_per_s: float
    steps_per_s_per_device: float
    efficiency: float  # steps_per_s_per_device / baseline steps_per_s
    replicas_in_sync: bool


# ------------------------------------------------------------------------------------------------------ programs
def updates_for(batch_size: int, budget_scale: float) -> int:
    """Updates of one point: max(MIN_UPDATES, enough for MIN_ENV_STEPS) times budget_scale, at least one."""
    base = max(MIN_UPDATES, math.ceil(MIN_ENV_STEPS / batch_size))
    return max(1, round(base * budget_scale))


def make_config(num_envs: int, num_updates: int, num_devices: int = 1) -> PPOConfig:
    """CartPole PPOConfig of exactly num_updates updates of num_envs * NUM_STEPS env steps; other fields default."""
    return PPOConfig(env=ENV_ID, num_envs=num_envs, num_steps=NUM_STEPS, num_minibatches=NUM_MINIBATCHES,
                     total_timesteps=num_updates * num_envs * NUM_STEPS, num_devices=num_devices)


# --------------------------------------------------------------------------------------------------- measuring
def measure_env_point(num_envs: int, budget_scale: float, key: jax.Array) -> EnvRow:
    """Compile training and its rollout limit on one device, then time one run of each (training first)."""
    config = make_config(num_envs, updates_for(num_envs * NUM_STEPS, budget_scale))
    train = common.compile_timed(make_train(config), key)
    rollout_limit = common.compile_timed(common.make_rollout_limit(config), key)
    train_s, _ = common.time_compiled(train)
    rollout_s, _ = common.time_compiled(rollout_limit)
    steps = config.num_env_steps
    return EnvRow(num_envs=num_envs, num_steps=NUM_STEPS, num_updates=config.num_updates, env_steps=steps,
                  compile_s=train.compile_s, train_s=train_s, train_steps_per_s=steps / train_s, rollout_s=rollout_s,
                  rollout_steps_per_s=steps / rollout_s, ratio=rollout_s / train_s)


def measure_device_point(scaling: str, num_devices: int, num_envs: int, num_updates: int,
                         baseline_steps_per_s: float | None, key: jax.Array) -> DeviceRow:
    """Compile and time one training run (`make_train`) over num_devices devices.

    num_devices=1 is the baseline (parallel "single": no mapping over devices); its efficiency is 1 by definition
    (baseline_steps_per_s=None). With more devices make_train maps over them with shard_map.
    """
    config = make_config(num_envs, num_updates, num_devices)
    compiled = common.compile_timed(make_train(config, check_replicas=True), key)
    run_s, (_, metrics) = common.time_compiled(compiled)
    steps_per_s = config.num_env_steps / run_s
    per_device = steps_per_s / num_devices
    return DeviceRow(scaling=scaling, parallel="single" if num_devices == 1 else "shard_map",
                     num_devices=num_devices, num_envs=num_envs,
                     envs_per_device=config.envs_per_device(), num_steps=NUM_STEPS, num_updates=config.num_updates,
                     env_steps=config.num_env_steps, compile_s=compiled.compile_s, run_s=run_s,
                     steps_per_s=steps_per_s, steps_per_s_per_device=per_device,
                     efficiency=1.0 if baseline_steps_per_s is None else per_device / baseline_steps_per_s,
                     replicas_in_sync=bool(metrics.replicas_in_sync.all()))


def measure_devices(devices: Sequence[int], budget_scale: float, key: jax.Array) -> list[DeviceRow]:
    """Strong then weak scaling: the single-device baseline (the D=1 point), then every device count above 1."""
    rows = []
    for scaling in ("strong", "weak"):
        def num_envs(d: int) -> int:
            return STRONG_NUM_ENVS if scaling == "strong" else WEAK_ENVS_PER_DEVICE * d

        # Same updates for every D: strong scaling keeps the total work fixed, weak scaling the work per device.
        num_updates = updates_for(num_envs(1) * NUM_STEPS, budget_scale)
        print(f"  {scaling}: baseline, 1 device, {num_envs(1)} envs ...", flush=True)
        baseline = measure_device_point(scaling, 1, num_envs(1), num_updates, None, key)
        rows.append(baseline)
        for d in devices:
            if d > 1:
                print(f"  {scaling}: shard_map, {d} devices, {num_envs(d)} envs ...", flush=True)
                rows.append(measure_device_point(scaling, d, num_envs(d), num_updates, baseline.steps_per_s, key))
    return rows


def check_device_counts(devices: Sequence[int]) -> None:
    """Exit with a message if a count exceeds the local devices, or on CPU would leave no fake device spare."""
    available, backend = jax.local_device_count(), jax.default_backend()
    limit = available - 1 if backend == "cpu" else available
    too_many = [d for d in devices if d > limit]
    if not too_many:
        return
    if backend == "cpu":
        sys.exit(f"--devices {too_many}: this process has {available} CPU device(s), and on CPU at least one must "
                 f"stay spare (XLA:CPU was seen to deadlock with every fake device busy): use at most {limit}, or "
                 f"raise --fake-cpu-devices (XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r})")
    sys.exit(f"--devices {too_many}: only {available} local {backend} device(s) exist")


# ------------------------------------------------------------------------------------------------------ output
def plot(path: Path, env_rows: Sequence[EnvRow], device_rows: Sequence[DeviceRow], title: str) -> None:
    """Two panels: steps/s against num_envs (log-log), and efficiency against devices; a skipped part says so."""
    try:
        import matplotlib
    except ImportError:
        sys.exit("matplotlib is needed for the plot: .venv/bin/pip install matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_envs, ax_devices) = plt.subplots(1, 2, figsize=(13, 5))
    if env_rows:
        envs = [r.num_envs for r in env_rows]
        ax_envs.loglog(envs, [r.train_steps_per_s for r in env_rows], "o-", label="training")
        ax_envs.loglog(envs, [r.rollout_steps_per_s for r in env_rows], "s--", label="rollout limit (no learning)")
        for r in env_rows:
            ax_envs.annotate(f"{r.ratio:.2f}", (r.num_envs, r.train_steps_per_s), textcoords="offset points",
                             xytext=(0, -14), ha="center", fontsize=8)
        ax_envs.set_xticks(envs, [str(n) for n in envs])
        ax_envs.set_xticks([], minor=True)
        low, high = ax_envs.get_ylim()
        ax_envs.set_ylim(low / 1.5, high)  # room for the ratio labels under the lowest point
        ax_envs.legend(title="numbers: ratio training / rollout limit", title_fontsize=8)
    else:
        ax_envs.text(0.5, 0.5, "skipped (--skip-envs)", ha="center", va="center", transform=ax_envs.transAxes)
    ax_envs.set(xlabel="num_envs (one device)", ylabel="env steps / s",
                title=f"Env scaling: {ENV_ID}, num_steps={NUM_STEPS}")
    ax_envs.grid(True, which="major", alpha=0.3)

    if device_rows:
        counts = sorted({r.num_devices for r in device_rows})
        for scaling, style in (("strong", "o-"), ("weak", "s--")):
            line = sorted((r for r in device_rows if r.scaling == scaling), key=lambda r: r.num_devices)
            if line:
                ax_devices.plot([r.num_devices for r in line], [r.efficiency for r in line], style,
                                label=f"{scaling} (shard_map; D=1: make_train on one device)")
        ax_devices.axhline(1.0, color="gray", lw=1, label="ideal")
        ax_devices.plot(counts, [1 / d for d in counts], ":", color="gray", label="1/D (no speed-up)")
        ax_devices.set_xticks(counts, [str(d) for d in counts])
        ax_devices.set_ylim(bottom=0)
        ax_devices.legend(fontsize=8)
    else:
        ax_devices.text(0.5, 0.5, "skipped (--skip-devices)", ha="center", va="center",
                        transform=ax_devices.transAxes)
    ax_devices.set(xlabel="devices D", ylabel="efficiency (steps/s per device vs. 1-device make_train)",
                   title=f"Device scaling: strong {STRONG_NUM_ENVS} envs, weak {WEAK_ENVS_PER_DEVICE} envs/device")
    ax_devices.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    start = time.perf_counter()
    args = parse_args(argv)
    key = jax.random.key(0)
    header = common.machine_lines()
    print("\n".join(header))
    fake_cpu = jax.default_backend() == "cpu" and jax.local_device_count() > 1
    if fake_cpu and not args.skip_devices:
        print(f"note: the {jax.local_device_count()} devices are fake CPU devices sharing this host's "
              f"{os.cpu_count()} cores, so little or no speed-up is expected here; on CPU this checks the "
              "measurement harness, which on a GPU/TPU host measures real scaling")
    print("note: absolute steps/s are noisy on a shared machine; ratio and efficiency are measured back to back",
          flush=True)
    if not args.skip_devices:
        check_device_counts(args.devices)

    env_rows: list[EnvRow] = []
    if not args.skip_envs:
        print("\nenv scaling (one device) ...", flush=True)
        for num_envs in args.envs:
            print(f"  num_envs={num_envs} ...", flush=True)
            env_rows.append(measure_env_point(num_envs, args.budget_scale, key))
    device_rows: list[DeviceRow] = []
    if not args.skip_devices:
        print("\ndevice scaling ...", flush=True)
        device_rows = measure_devices(args.devices, args.budget_scale, key)

    written = []
    if env_rows:
        print(f"\n## Env scaling: {ENV_ID}, one device, num_steps={NUM_STEPS}, num_minibatches={NUM_MINIBATCHES}; "
              "ratio = training / rollout limit\n")
        print(common.markdown_table(env_rows))
        written.append(args.out_dir / "scaling_envs.csv")
        common.write_csv(written[-1], env_rows)
    if device_rows:
        kind = "fake CPU devices, shared cores" if fake_cpu else f"{jax.devices()[0].device_kind} devices"
        print(f"\n## Device scaling ({kind}): strong = {STRONG_NUM_ENVS} envs in all, weak = "
              f"{WEAK_ENVS_PER_DEVICE} envs per device; efficiency = (steps/s / D) / steps/s of 1-device "
              "make_train ('single')\n")
        print(common.markdown_table(device_rows))
        written.append(args.out_dir / "scaling_devices.csv")
        common.write_csv(written[-1], device_rows)
    title = header[1].split(", XLA_FLAGS")[0] + (" (fake CPU devices: no real speed-up possible)" if fake_cpu else "")
    written.append(args.out_dir / "scaling.png")
    plot(written[-1], env_rows, device_rows, title)
    print(f"\nwrote {', '.join(str(p) for p in written)}")
    print(f"total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
