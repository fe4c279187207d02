"""Learning-curve figures: the drawn lines and bands hold the statistics over seeds that the legend/title state."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from jaxppo import cli, outputs
from jaxppo.plotting import BAND_DESCRIPTIONS, band_over_seeds, curve_figure, plot_curves, plot_runs

PNG = b"\x89PNG\r\n\x1a\n"
# Run "a": 4 seeds x 2 updates. At update 1 the seeds' returns are 1, 3, 5, 15; at update 2 all are 10 higher.
RETURNS_A = np.array([[1.0, 11.0], [3.0, 13.0], [5.0, 15.0], [15.0, 25.0]])
RETURNS_B = np.array([[2.0, 4.0]])  # run "b": one seed
# Worked by hand for update 1 (1, 3, 5, 15): mean 6; deviations -5, -3, -1, 9 -> var (25+9+1+81)/4 = 29;
# min 1, max 15; percentiles (linear interpolation at positions 0.75, 1.5, 2.25): 2.5, 4, 7.5.
EXPECTED_A = {  # (line, low, high) at update 1
    "std": (6.0, 6.0 - math.sqrt(29.0), 6.0 + math.sqrt(29.0)),
    "minmax": (6.0, 1.0, 15.0),
    "iqr": (4.0, 2.5, 7.5),
}


def _write_run(path, returns):
    path.mkdir()
    num_seeds, num_updates = returns.shape
    env_steps = np.tile(np.arange(1, num_updates + 1, dtype=np.int64) * 128, (num_seeds, 1))
    outputs.write_metrics_csv(path / "metrics.csv", {"env_steps": env_steps, "episode_return": returns})
    return path


@pytest.fixture
def two_runs(tmp_path):
    return [_write_run(tmp_path / "a", RETURNS_A), _write_run(tmp_path / "b", RETURNS_B)]


@pytest.fixture
def saved_figures(monkeypatch):
    """Every Figure saved while the test runs (the figure is still saved to its file)."""
    figures = []
    original = Figure.savefig

    def savefig(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def _band_edges(collection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, low, high) of a fill_between band, read back from its polygon's vertices."""
    vertices = collection.get_paths()[0].vertices
    xs = np.unique(vertices[:, 0])
    low = np.array([vertices[vertices[:, 0] == x, 1].min() for x in xs])
    high = np.array([vertices[vertices[:, 0] == x, 1].max() for x in xs])
    return xs, low, high


@pytest.mark.parametrize("band", ["std", "minmax", "iqr"])
def test_plot_command_band_option_sets_the_drawn_line_and_band(two_runs, tmp_path, saved_figures, capsys, band):
    out = tmp_path / "curves.png"
    assert cli.main(["plot", *map(str, two_runs), "--band", band, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
    (fig,) = saved_figures
    (ax,) = fig.axes
    line, low, high = EXPECTED_A[band]
    shift = np.array([0.0, 10.0])  # update 2 = update 1 + 10 for every seed
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [128, 256])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), line + shift)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [2.0, 4.0])  # one seed: the line is that seed
    (collection,) = ax.collections  # one band: run b has a single seed
    xs, lows, highs = _band_edges(collection)
    np.testing.assert_array_equal(xs, [128, 256])
    np.testing.assert_allclose(lows, low + shift)
    np.testing.assert_allclose(highs, high + shift)
    assert BAND_DESCRIPTIONS[band] in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a (n=4)", "b (n=1)"]


def test_default_band_is_mean_plus_minus_std(two_runs, tmp_path, saved_figures):
    plot_runs(two_runs, tmp_path / "default.png")
    (ax,) = saved_figures[0].axes
    _, low, high = _band_edges(ax.collections[0])
    np.testing.assert_allclose(low, np.array(EXPECTED_A["std"][1]) + [0.0, 10.0])
    assert "mean ± std over seeds" in ax.get_title()


def test_band_over_seeds_matches_numpy():
    returns = np.random.default_rng(0).normal(size=(5, 7))
    line, low, high = band_over_seeds(returns, "iqr")
    np.testing.assert_allclose(line, np.median(returns, axis=0))
    np.testing.assert_allclose([low, high], np.percentile(returns, [25, 75], axis=0))
    line, low, high = band_over_seeds(returns, "std")
    np.testing.assert_allclose(high - line, returns.std(axis=0))
    np.testing.assert_allclose(line - low, returns.std(axis=0))


def test_plot_runs_labels_and_file(two_runs, tmp_path):
    out = plot_runs(two_runs, tmp_path / "figs" / "curves.png", labels=["four seeds", "one seed"])
    assert out == tmp_path / "figs" / "curves.png"
    assert out.read_bytes()[:8] == PNG


def test_plot_runs_bad_folders_are_clear_errors(two_runs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no metrics\.csv"):
        plot_runs([two_runs[0], tmp_path / "empty"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="2 run folders but 1 labels"):
        plot_runs(two_runs, tmp_path / "x.png", labels=["only one"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metrics.csv").write_text("step,value\n1,2.0\n")
    with pytest.raises(ValueError, match="expected a header starting 'seed,update'"):
        plot_runs([tmp_path / "other"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_curves_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="band='quartiles': must be one of std, minmax, iqr"):
        curve_figure(np.arange(3), [np.zeros((2, 3))], ["a"], band="quartiles")
    with pytest.raises(ValueError, match="1 curves but 2 labels"):
        curve_figure(np.arange(3), [np.zeros((2, 3))], ["a", "b"])
    with pytest.raises(ValueError, match="a: 3 updates but 4 env_steps values"):
        plot_curves(np.arange(4), [np.zeros((2, 3))], ["a"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
