"""Presets: every one builds a valid config, overrides win, bad names are refused helpfully, every environment is
covered (or skipped for a stated reason), and experiments/returns_table.py runs end to end on a tiny budget."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxppo.config import PPOConfig
from jaxppo.presets import PRESETS, REFERENCE_RETURNS, SKIPPED_ENVS, preset_config, preset_names, preset_values
from tests.experiment_modules import load

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "returns_table.py"


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_builds_a_valid_config(name):
    config = preset_config(name)
    assert isinstance(config, PPOConfig)
    assert name == config.env.lower() or name.startswith(config.env.lower() + "/")
    assert config.num_updates >= 1
    assert config.total_timesteps == PRESETS[name].get("total_timesteps", PPOConfig.total_timesteps)


def test_exact_gymnax_id_is_accepted():
    assert preset_config("Breakout-MinAtar") == preset_config("breakout-minatar")


def test_overrides_win():
    config = preset_config("pendulum-v1", total_timesteps=4096, lr=1e-3, gamma=0.9)
    assert (config.total_timesteps, config.lr, config.gamma) == (4096, 1e-3, 0.9)
    assert config.normalize_observations is PRESETS["pendulum-v1"]["normalize_observations"]


def test_preset_values_is_a_copy():
    values = preset_values("cartpole-v1")
    values["lr"] = 123.0
    assert PRESETS["cartpole-v1"]["lr"] != 123.0


def test_unknown_name_names_close_matches():
    with pytest.raises(ValueError, match="breakout-minatar"):
        preset_values("breakout-minatr")


def test_unknown_field_is_refused():
    with pytest.raises(ValueError, match="learning_rate"):
        preset_config("cartpole-v1", learning_rate=1e-3)


def test_every_environment_has_a_preset_or_a_stated_skip():
    # gymnax's own ids, read in a fresh process: other tests register probe envs in this one.
    listing = subprocess.run([sys.executable, "-c", "import gymnax, json; print(json.dumps(gymnax.registered_envs))"],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    builtin_envs = json.loads(listing.stdout.strip().splitlines()[-1])
    assert "CartPole-v1" in builtin_envs and len(builtin_envs) > 20
    skipped = SKIPPED_ENVS
    assert all(reason.strip() for reason in skipped.values())
    assert not set(skipped) & {values["env"] for values in PRESETS.values()}
    missing = [env for env in builtin_envs if env.lower() not in PRESETS and env not in skipped]
    assert not missing, f"no preset and no stated skip for {missing}"
    assert set(REFERENCE_RETURNS) <= {values["env"] for values in PRESETS.values()}


def test_small_budgets_name_presets_and_fit_their_full_budget():
    module = load("returns_table")
    from jaxppo.presets import gymnax_preset_names

    assert set(module.SMALL_BUDGETS) == set(gymnax_preset_names())  # suite presets: docs/env_suites.md
    for name in gymnax_preset_names():
        assert module.budget_steps(name, "small") <= module.budget_steps(name, "full")


@pytest.mark.slow
def test_returns_table_smoke(tmp_path):
    """The script end to end: two seeds, one 4-update CartPole run; CSV columns and row, markdown, chart."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # no fake devices from conftest: the script runs on one device
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--envs", "cartpole-v1", "--num-seeds", "2", "--out", str(tmp_path),
         "--set", "num_envs=2", "num_steps=16", "total_timesteps=128", "num_minibatches=2", "num_epochs=1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "returns.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(load("returns_table").Row._fields)
    assert len(rows) == 1
    row = rows[0]
    assert (row["preset"], row["env"], row["budget"], row["num_seeds"], row["env_steps"]) == (
        "cartpole-v1", "CartPole-v1", "small", "2", "128")
    assert float(row["reference"]) == 500.0
    assert row["verdict"] == "below"  # 128 env steps of CartPole cannot reach 500
    assert float(row["return_mean"]) > 0 and float(row["return_std"]) >= 0
    assert float(row["eval_mean"]) >= 8 and float(row["eval_std"]) >= 0  # a CartPole episode lasts >= 8 steps
    markdown = (tmp_path / "returns.md").read_text()
    assert "| cartpole-v1 | CartPole-v1 | small | 2 | 128 |" in markdown
    assert all(f"- {env}: {reason}" in markdown for env, reason in SKIPPED_ENVS.items())
    assert (tmp_path / "returns.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_verdicts_by_hand():
    module = load("returns_table")
    assert module.verdict(1.0, 0.9, 0.05, 1.0) == "meets"  # the training return reaches it
    assert module.verdict(0.95, 0.95, 0.03, 1.0) == "within noise"  # 0.95 + 2 * 0.03 >= 1
    assert module.verdict(0.9, 0.9, 0.04, 1.0) == "below"  # 0.9 + 2 * 0.04 < 1
    assert module.verdict(-150.0, -150.0, 1.0, None) == "no reference"


def test_eval_statistics_by_hand():
    returns = np.array([[1.0, 3.0], [5.0, 7.0]])  # seeds x episodes
    mean, std, sem = load("returns_table").eval_statistics(returns)
    assert mean == pytest.approx(4.0)
    assert std == pytest.approx(2.0)  # per-seed means 2 and 6, population std
    # all four episodes: sample std sqrt(((-3)^2 + (-1)^2 + 1^2 + 3^2) / 3) = sqrt(20/3), over sqrt(4)
    assert sem == pytest.approx(np.sqrt(20 / 3) / 2)


@pytest.mark.parametrize("preset, variant", [("brax/ant", "jaxppo-tanh-recompute"),
                                             ("brax/hopper", "jaxppo-tanh-recompute-novalueclip"),
                                             ("brax/inverted_pendulum", "jaxppo-tanh-eps8-recompute-noclips-lecun"),
                                             ("brax/inverted_double_pendulum", "jaxppo-sizes-recompute-novalueclip")])
def test_each_brax_preset_is_the_mapping_its_comparison_with_brax_measured(preset, variant):
    # docs/results.md section 12: each brax preset was set from one jaxppo variant of experiments/brax_parity.py
    # (its batch layout scaled down). Every setting but the layout and the budget must be that variant's.
    parity = load("brax_parity")
    measured = {**parity.jaxppo_base("small"), **parity.VARIANTS[variant]}
    layout = ("num_envs", "num_steps", "num_minibatches", "total_timesteps")
    config = preset_config(preset)
    for field in set(measured) | set(PRESETS[preset]):
        if field not in layout and field != "env":
            assert getattr(config, field) == measured.get(field, getattr(PPOConfig(), field)), field


def test_shared_gru_variant_is_the_gru_preset_with_the_measured_changes():
    # docs/results.md section 11: the variant was measured as experiments/memory_speed.py's gru-shared program (the
    # GRU preset with memory_shared=True) run with --set normalize_rewards=True (the GRU preset's own setting since);
    # nothing else may differ.
    measured = dataclasses.replace(preset_config("jaxppo/cartpole-po-v1"), memory_shared=True, normalize_rewards=True)
    assert preset_config("jaxppo/cartpole-po-v1/gru-shared") == measured
