"""One set of metric names: the docs' metrics table, metrics.csv, TensorBoard / W&B and `jaxppo plot --metric`
name every metric alike, and the periodic evaluation's curves reach the trackers and the plots under that name."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from jaxppo import cli, outputs
from jaxppo.loggers import EVAL_METRICS, MetricsLogger, log_evaluations, make_seed_loggers
from jaxppo.losses import LossMetrics
from jaxppo.plotting import metric_column, read_eval_csv
from jaxppo.train import Metrics
from tests.helpers import read_tensorboard

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def documented_metrics() -> list[str]:
    """Every `name` in the first column of the metrics table of docs/metrics.md."""
    text = DOCS.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    return [name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])]


def every_column() -> list[str]:
    """The metrics.csv columns of a run with every optional metric on (masks, replica check)."""
    leaf = np.zeros((1, 2), np.float32)
    loss = LossMetrics(**{f.name: leaf for f in dataclasses.fields(LossMetrics)})
    values = {f.name: loss if f.name == "loss" else leaf for f in dataclasses.fields(Metrics) if f.init}
    values["update"], values["steps_per_update"] = np.array([[1, 2]]), 64
    return list(outputs.metrics_columns(Metrics(**values)))


def test_the_docs_table_names_every_column_and_plot_takes_every_name_it_shows():
    documented, columns = documented_metrics(), every_column()
    assert set(columns) <= set(documented), f"not in docs/metrics.md: {sorted(set(columns) - set(documented))}"
    for name in documented:
        assert name in EVAL_METRICS or metric_column(name, columns) == name
    assert set(EVAL_METRICS) <= set(documented)


def test_a_loss_metric_is_also_its_path_in_the_metrics_pytree():
    columns = ["env_steps", "episode_return", "policy_loss", "value_loss", "aux/l2"]
    assert metric_column("loss.policy_loss", columns) == "policy_loss"
    assert metric_column("loss/value_loss", columns) == "value_loss"
    assert metric_column("loss.aux.l2", columns) == "aux/l2"  # a custom loss's nested dict
    with pytest.raises(ValueError, match=r"no metric 'loss\.nothing'; metrics: episode_return, policy_loss.*"
                                         r"evaluation curves: eval_return, eval_return_std, eval_length"):
        metric_column("loss.nothing", columns)


def _run(path: Path, with_eval: bool = True) -> Path:
    """A run folder with 2 seeds x 4 updates in metrics.csv and, at updates 2 and 4, evaluations in eval.csv."""
    path.mkdir()
    steps = np.tile(np.arange(1, 5, dtype=np.int64) * 64, (2, 1))
    value_loss = np.array([[4.0, 3.0, 2.0, 1.0], [8.0, 6.0, 4.0, 2.0]])
    outputs.write_metrics_csv(path / "metrics.csv", {"env_steps": steps, "episode_return": value_loss * 10,
                                                     "value_loss": value_loss})
    if with_eval:
        for update, returns in ((2, [[10.0, 20.0], [30.0, 50.0]]), (4, [[100.0, 100.0], [200.0, 300.0]])):
            outputs.append_eval_csv(path / "eval.csv", update, update * 64, np.array(returns),
                                    np.array(returns) / 10)
    return path


@pytest.fixture
def drawn(monkeypatch):
    """The y data of every line of every figure saved during the test."""
    lines = []
    original = Figure.savefig

    def savefig(self, *args, **kwargs):
        lines.extend((line.get_xdata(), line.get_ydata()) for line in self.axes[0].lines)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return lines


def test_plot_draws_a_loss_path_and_the_evaluation_curve(tmp_path, drawn, capsys):
    run = _run(tmp_path / "a")
    assert cli.main(["plot", str(run), "--metric", "loss.value_loss", "--out", str(tmp_path / "loss.png")]) == 0
    np.testing.assert_allclose(drawn[-1][1], [6.0, 4.5, 3.0, 1.5])  # mean over the 2 seeds
    assert cli.main(["plot", str(run), "--metric", "eval_return", "--out", str(tmp_path / "eval.png")]) == 0
    x, y = drawn[-1]
    np.testing.assert_array_equal(x, [128, 256])
    np.testing.assert_allclose(y, [(15.0 + 40.0) / 2, (100.0 + 250.0) / 2])  # seed means 15, 40 then 100, 250
    printed = capsys.readouterr().out
    assert f"wrote {tmp_path / 'eval.png'}: eval_return vs env steps of {run} (2 seed(s), 2 points)" in printed
    line = _plot_error(["plot", str(_run(tmp_path / "b", with_eval=False)), "--metric", "eval_return",
                        "--out", str(tmp_path / "x.png")], capsys)
    assert "no eval.csv, so no eval_return curve; train with --eval-every N" in line


def _plot_error(argv, capsys) -> str:
    assert cli.main(argv) == 2
    return capsys.readouterr().err.strip()


def test_eval_csv_is_read_per_seed_in_update_order_and_a_repeated_row_keeps_the_last(tmp_path):
    path = tmp_path / "eval.csv"
    outputs.append_eval_csv(path, 4, 256, np.array([[1.0, 3.0]]), np.array([[5, 7]]))
    outputs.append_eval_csv(path, 2, 128, np.array([[0.0, 0.0]]), np.array([[1, 1]]))
    outputs.append_eval_csv(path, 4, 256, np.array([[2.0, 4.0]]), np.array([[6, 8]]))  # a resume re-evaluated it
    steps, columns = read_eval_csv(path)
    np.testing.assert_array_equal(steps, [128, 256])
    np.testing.assert_allclose(columns["mean_return"], [[0.0, 3.0]])
    np.testing.assert_allclose(columns["std_return"], [[0.0, 1.0]])
    np.testing.assert_allclose(columns["mean_length"], [[1.0, 7.0]])


def test_evaluations_reach_tensorboard_under_their_metric_names(tmp_path):
    loggers = make_seed_loggers(tmp_path / "run", seeds=[3, 4], tensorboard=True, wandb_project=None)
    returns = np.array([[10.0, 20.0, 30.0], [5.0, 5.0, 5.0]])
    log_evaluations(loggers, 640, returns, np.array([[10, 20, 30], [7, 7, 7]]))
    for logger in loggers:
        logger.close()
    seed_3 = read_tensorboard(tmp_path / "run" / "tb" / "seed_3")
    assert sorted(seed_3) == sorted(EVAL_METRICS)
    assert seed_3["eval_return"] == [(640, 20.0)]
    assert seed_3["eval_return_std"] == [(640, float(np.float32(np.std([10.0, 20.0, 30.0]))))]
    assert seed_3["eval_length"] == [(640, 20.0)]
    assert read_tensorboard(tmp_path / "run" / "tb" / "seed_4")["eval_return"] == [(640, 5.0)]


def test_evaluations_reach_every_sink_of_every_seed_and_shapes_are_checked():
    class Recording:
        def __init__(self):
            self.calls = []

        def log(self, step, metrics):
            self.calls.append((step, metrics))

        def close(self):
            pass

    sinks = [Recording(), Recording()]
    loggers = [MetricsLogger([sink]) for sink in sinks]  # a W&B sink gets exactly what these get
    log_evaluations(loggers, 128, np.array([[1.0, 3.0], [2.0, 2.0]]), np.array([[4, 6], [5, 5]]))
    assert sinks[0].calls == [(128, {"eval_return": 2.0, "eval_return_std": 1.0, "eval_length": 5.0})]
    assert sinks[1].calls == [(128, {"eval_return": 2.0, "eval_return_std": 0.0, "eval_length": 5.0})]
    with pytest.raises(ValueError, match=r"returns and lengths must be \[2 seeds, episodes\]"):
        log_evaluations(loggers, 128, np.zeros((3, 2)), np.zeros((3, 2)))
    log_evaluations([], 128, np.zeros((3, 2)), np.zeros((3, 2)))  # no tracker: nothing to do
