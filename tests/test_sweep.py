"""Sweeps: one compiled program over settings x seeds equals the separately trained runs."""

from __future__ import annotations

import csv
import dataclasses

import jax
import numpy as np
import pytest

from jaxppo import outputs
from jaxppo.config import PPOConfig
from jaxppo.sweep import (grid_settings, random_settings, run_sweep, setting_label, summary_lines, summary_table,
                          write_sweep)
from jaxppo.train import make_train

# 4 envs x 32 steps, 5 updates of 128 env steps.
TINY = PPOConfig(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 5, num_minibatches=2, num_epochs=2)


@pytest.fixture(scope="module")
def lr_sweep():
    return run_sweep(TINY, grid={"lr": [1e-3, 3e-4]}, num_seeds=2, seed=5)


def test_sweep_equals_separate_runs(lr_sweep):
    assert lr_sweep.settings == [{"lr": 1e-3}, {"lr": 3e-4}]
    assert lr_sweep.seeds == [5, 6]
    assert lr_sweep.final_returns.shape == (2, 2)
    assert lr_sweep.episode_return.shape == (2, 2, 5)
    np.testing.assert_array_equal(lr_sweep.env_steps, [128, 256, 384, 512, 640])
    for p, lr in enumerate([1e-3, 3e-4]):
        train = jax.jit(make_train(dataclasses.replace(TINY, lr=lr)))
        for s, seed in enumerate([5, 6]):
            _, metrics = train(jax.random.key(seed))
            curve = np.asarray(metrics.episode_return)
            np.testing.assert_allclose(lr_sweep.episode_return[p, s], curve, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(lr_sweep.final_returns[p, s], outputs.final_returns(curve[None])[0],
                                       rtol=1e-4)


def test_summary_and_files(lr_sweep, tmp_path):
    table = summary_table(lr_sweep)
    assert [row["lr"] for row in table] == [1e-3, 3e-4]
    for row, finals in zip(table, lr_sweep.final_returns):
        assert row["mean"] == pytest.approx(finals.mean()) and row["std"] == pytest.approx(finals.std())
        assert row["min"] == pytest.approx(finals.min()) and row["max"] == pytest.approx(finals.max())
    write_sweep(lr_sweep, tmp_path / "out")
    with open(tmp_path / "out" / "sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["lr", "mean", "std", "min", "max", "returns"]
    assert [float(r["lr"]) for r in rows] == [1e-3, 3e-4]
    for row, finals in zip(rows, lr_sweep.final_returns):
        np.testing.assert_allclose([float(v) for v in row["returns"].split(";")], finals)
        assert float(row["mean"]) == pytest.approx(finals.mean())
    png = (tmp_path / "out" / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_figure_draws_each_settings_mean_and_std_band(lr_sweep, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    figures = []
    original = Figure.savefig

    def savefig(fig, *args, **kwargs):  # record the figure, then save it as usual
        figures.append(fig)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    write_sweep(lr_sweep, tmp_path)
    (ax,) = figures[0].axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lr=0.001 (n=2)", "lr=0.0003 (n=2)"]
    assert "2 setting(s) x 2 seed(s)" in ax.get_title() and "mean ± std over seeds" in ax.get_title()
    for line, band, curves in zip(ax.lines, ax.collections, lr_sweep.episode_return):
        np.testing.assert_array_equal(line.get_xdata(), lr_sweep.env_steps)
        np.testing.assert_allclose(line.get_ydata(), curves.mean(axis=0))
        vertices = band.get_paths()[0].vertices
        top = [vertices[vertices[:, 0] == x, 1].max() for x in lr_sweep.env_steps]
        np.testing.assert_allclose(top, curves.mean(axis=0) + curves.std(axis=0), rtol=1e-6, atol=1e-9)


def test_a_sweep_folder_is_a_training_run_of_members(tmp_path):
    # The sweep's folder holds what `jaxppo train` writes, for every member (setting-major, seeds inner), plus the
    # settings in hparams.csv.
    from jaxppo import runner
    from jaxppo.population import read_hparams

    out = tmp_path / "sweep"
    options = runner.RunOptions(checkpoint_every=2)
    partial = run_sweep(TINY, grid={"lr": [1e-3, 3e-4]}, num_seeds=2, seed=5, out=out, options=options)
    columns = outputs.read_metrics_csv(out / outputs.METRICS)
    assert columns["episode_return"].shape == (4, 5)
    np.testing.assert_allclose(columns["learning_rate"][:, 0], [1e-3, 1e-3, 3e-4, 3e-4], rtol=1e-6)
    names, rows = read_hparams(out)
    assert names == ("lr",) and rows[:, 1].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(rows[:, 2], [1e-3, 1e-3, 3e-4, 3e-4], rtol=1e-6)
    summary = outputs.read_json(out / outputs.SUMMARY, "summary")
    assert [m["seed"] for m in summary["members"]] == [5, 6, 5, 6] and partial.finished
    assert partial.episode_return.shape == (2, 2, 5)


def test_overwrite_keeps_the_old_results_until_the_new_sweep_has_finished(tmp_path, monkeypatch, capsys):
    # A SIGTERM half-way through `sweep --overwrite` leaves the earlier sweep's files byte for byte; the next
    # --overwrite replaces them only at its end, and no staging folder is left.
    import os
    import signal

    from jaxppo import run_folder, runner

    out = tmp_path / "sweep"
    options = runner.RunOptions(checkpoint_every=2)
    first = run_sweep(TINY, grid={"lr": [1e-3, 3e-4]}, num_seeds=2, seed=5, out=out, options=options)
    write_sweep(first, out)
    (out / "checkpoints" / "mine.txt").write_text("the user's")
    before = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}

    original_append = outputs.append_metrics_csv

    def append_then_stop(*args, **kwargs):
        original_append(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(outputs, "append_metrics_csv", append_then_stop)
    stopped = run_sweep(TINY, grid={"lr": [1e-3, 3e-4]}, num_seeds=2, seed=9, out=out, options=options,
                        overwrite=True)
    assert not stopped.finished
    assert "earlier results are kept; the stopped sweep is in" in capsys.readouterr().out
    after = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()
             and run_folder.STAGING not in path.parts}
    assert after == before
    assert (out / run_folder.STAGING / outputs.METRICS).exists()

    monkeypatch.setattr(outputs, "append_metrics_csv", original_append)
    second = run_sweep(TINY, grid={"lr": [1e-3, 3e-4]}, num_seeds=2, seed=9, out=out, options=options,
                       overwrite=True)
    assert second.finished and not (out / run_folder.STAGING).exists()
    summary = outputs.read_json(out / outputs.SUMMARY, "summary")
    assert [m["seed"] for m in summary["members"]] == [9, 10, 9, 10]
    assert not (out / outputs.SWEEP_CSV).exists()  # the old sweep's table went with its run
    assert (out / "checkpoints" / "mine.txt").read_text() == "the user's"
    assert any(path.name.isdigit() for path in (out / "checkpoints").iterdir())  # the new run's checkpoints


def test_summary_lines_best_first(lr_sweep):
    lines = summary_lines(lr_sweep)
    table = summary_table(lr_sweep)
    order = np.argsort([-row["mean"] for row in table], kind="stable")
    assert len(lines) == 2
    for line, p in zip(lines, order):
        row = table[p]
        assert line == (f"{setting_label(lr_sweep.settings[p])}: final return {row['mean']:.2f} +- {row['std']:.2f} "
                        f"[{row['min']:.2f}, {row['max']:.2f}] over 2 seed(s)")
    assert setting_label({"lr": 3e-4, "ent_coef": 0.0}) == "lr=0.0003, ent_coef=0"
    assert setting_label({}) == "base config"


def test_random_settings_respect_ranges_and_log_scale():
    settings = random_settings({"lr": (1e-5, 1e-1, "log"), "clip_eps": (0.1, 0.3, "linear")}, 400, seed=1)
    assert len(settings) == 400
    lrs = np.array([s["lr"] for s in settings])
    clips = np.array([s["clip_eps"] for s in settings])
    assert lrs.min() >= 1e-5 and lrs.max() <= 1e-1
    assert clips.min() >= 0.1 and clips.max() <= 0.3
    # Log scale: each decade gets about a quarter of the draws (a linear draw would put ~90% in the top one).
    decades = np.histogram(np.log10(lrs), bins=[-5, -4, -3, -2, -1])[0] / len(lrs)
    np.testing.assert_allclose(decades, 0.25, atol=0.08)
    assert abs(np.mean(clips) - 0.2) < 0.02
    # Reproducible from the seed, different for another seed.
    assert random_settings({"lr": (1e-5, 1e-1, "log")}, 3, seed=1) == random_settings(
        {"lr": (1e-5, 1e-1, "log")}, 3, seed=1)
    assert random_settings({"lr": (1e-5, 1e-1, "log")}, 3, seed=2) != random_settings(
        {"lr": (1e-5, 1e-1, "log")}, 3, seed=1)
    with pytest.raises(ValueError, match="log scale"):
        random_settings({"lr": (0.0, 1.0, "log")}, 1)
    with pytest.raises(ValueError, match="scale"):
        random_settings({"lr": (0.1, 1.0, "cubic")}, 1)


@pytest.mark.parametrize("kwargs", [dict(grid={"learning_rate": [1e-3]}),
                                    dict(random_samples=2, ranges={"num_envs": (1, 8, "linear")})])
def test_unknown_hyperparameter_names_the_field(kwargs):
    with pytest.raises(ValueError) as info:
        run_sweep(TINY, **kwargs)
    message = str(info.value)
    name = next(iter(kwargs.get("grid") or kwargs["ranges"]))
    assert repr(name) in message and "lr, gamma, gae_lambda, clip_eps, vf_clip_eps, ent_coef" in message


def test_out_of_range_value_names_the_field():
    with pytest.raises(ValueError, match="gamma"):
        run_sweep(TINY, grid={"gamma": [1.5]})


def test_argument_errors():
    with pytest.raises(ValueError, match="'lr' has no values"):
        grid_settings({"lr": []})
    with pytest.raises(ValueError, match="num_seeds=0"):
        run_sweep(TINY, grid={"lr": [1e-3]}, num_seeds=0)
    with pytest.raises(ValueError, match="random_samples > 0 needs ranges"):
        run_sweep(TINY, random_samples=2)
    assert grid_settings({"lr": [1, 2], "gamma": [0.9, 0.99]}) == [
        {"lr": 1.0, "gamma": 0.9}, {"lr": 1.0, "gamma": 0.99}, {"lr": 2.0, "gamma": 0.9}, {"lr": 2.0, "gamma": 0.99}]
