"""Learning-curve figures from run folders."""

from __future__ import annotations

import pytest

from jaxppo import cli
from jaxppo.plotting import plot_curves, plot_runs

TINY = ["--num-envs", "4", "--num-steps", "32", "--total-timesteps", "640", "--num-minibatches", "2", "--quiet"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, seeds in (("a", "2"), ("b", "1")):
        assert cli.main(["train", *TINY, "--num-seeds", seeds, "--out", str(root / name)]) == 0
    return [root / "a", root / "b"]


def test_plot_runs_writes_png(two_runs, tmp_path):
    out = plot_runs(two_runs, tmp_path / "figs" / "curves.png", labels=["two seeds", "one seed"])
    data = out.read_bytes()
    assert out == tmp_path / "figs" / "curves.png"
    assert data[:8] == PNG and len(data) > 5000
    # Default labels (folder names) and the std band work too.
    assert plot_runs(two_runs, tmp_path / "std.png", band="std").read_bytes()[:8] == PNG


def test_plot_runs_missing_metrics_is_a_clear_error(two_runs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no metrics\.csv"):
        plot_runs([two_runs[0], tmp_path / "empty"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="2 run folders but 1 labels"):
        plot_runs(two_runs, tmp_path / "x.png", labels=["only one"])
    assert not (tmp_path / "x.png").exists()


def test_plot_curves_checks_its_arguments(tmp_path):
    import numpy as np

    with pytest.raises(ValueError, match="band"):
        plot_curves(np.arange(3), [np.zeros((2, 3))], ["a"], tmp_path / "x.png", band="iqr")
    with pytest.raises(ValueError, match="1 curves but 2 labels"):
        plot_curves(np.arange(3), [np.zeros((2, 3))], ["a", "b"], tmp_path / "x.png")
