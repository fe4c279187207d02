"""jaxppo.loggers: every sink read back from what it wrote (CSV, TensorBoard event files, W&B offline run)."""

import csv
import dataclasses
import io
import math
import sys

import numpy as np
import pytest

from jaxppo.loggers import (
    CsvSink, MetricsLogger, StdoutSink, TensorBoardSink, WandbSink, log_metrics_history, make_logger,
)
from jaxppo.outputs import metrics_to_columns
from jaxppo.train import Metrics


class RecordingSink:
    def __init__(self, fail_on_close=False):
        self.calls, self.closed, self.fail_on_close = [], False, fail_on_close

    def log(self, step, metrics):
        self.calls.append((step, dict(metrics)))

    def close(self):
        self.closed = True
        if self.fail_on_close:
            raise OSError("disk gone")


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def read_tensorboard(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_event_files_hold_the_exact_scalars_and_steps(tmp_path):
    logged = [(512, {"episode_return": 9.5, "value_loss": 0.125}),
              (1024, {"episode_return": 21.25, "value_loss": float("nan")}),
              (3_000_000_000, {"episode_return": 0.1, "value_loss": -2.0})]  # step beyond int32
    with MetricsLogger([TensorBoardSink(tmp_path / "tb")]) as logger:
        for step, metrics in logged:
            logger.log(step, metrics)

    scalars = read_tensorboard(tmp_path / "tb")
    assert sorted(scalars) == ["episode_return", "value_loss"]
    assert [s for s, _ in scalars["episode_return"]] == [512, 1024, 3_000_000_000]
    # event files store float32: 0.1 comes back as float32(0.1), the others are exact
    assert [v for _, v in scalars["episode_return"]] == [9.5, 21.25, float(np.float32(0.1))]
    values = [v for _, v in scalars["value_loss"]]
    assert values[0] == 0.125 and math.isnan(values[1]) and values[2] == -2.0


def test_csv_resume_appends_under_one_header_and_refuses_another_header(tmp_path):
    path = tmp_path / "metrics_log.csv"
    with MetricsLogger([CsvSink(path)]) as logger:
        logger.log(128, {"episode_return": 1.5, "episodes_completed": np.int32(3)})
        logger.log(256, {"episode_return": np.float32(2.25), "episodes_completed": np.int32(0)})
    with MetricsLogger([CsvSink(path)]) as logger:  # a resumed run
        logger.log(384, {"episode_return": float("nan"), "episodes_completed": 1})

    rows = read_csv(path)
    assert rows == [["step", "episode_return", "episodes_completed"],
                    ["128", "1.5", "3"], ["256", "2.25", "0"], ["384", "nan", "1"]]

    before = path.read_bytes()
    sink = CsvSink(path)
    with pytest.raises(ValueError, match="metrics_log.csv") as raised:
        sink.log(512, {"episode_return": 1.0, "policy_loss": 0.5})
    sink.close()
    assert "differs" in str(raised.value)
    assert path.read_bytes() == before


def test_csv_rejects_a_changed_key_set_within_a_run(tmp_path):
    sink = CsvSink(tmp_path / "m.csv")
    sink.log(1, {"a": 1.0})
    with pytest.raises(ValueError, match="do not match"):
        sink.log(2, {"a": 1.0, "b": 2.0})
    sink.close()
    assert read_csv(tmp_path / "m.csv") == [["step", "a"], ["1", "1.0"]]


def test_make_logger_csv_always_tensorboard_when_asked(tmp_path):
    with make_logger(tmp_path / "plain", tensorboard=False, wandb_project=None) as logger:
        logger.log(10, {"x": 1.0})
    assert [type(s) for s in logger.sinks] == [CsvSink]
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["metrics_log.csv"]

    with make_logger(tmp_path / "tb_run", tensorboard=True, wandb_project=None) as logger:
        logger.log(10, {"x": 1.0})
        logger.log(20, {"x": 3.0})
    assert read_csv(tmp_path / "tb_run" / "metrics_log.csv")[1:] == [["10", "1.0"], ["20", "3.0"]]
    assert read_tensorboard(tmp_path / "tb_run" / "tb") == {"x": [(10, 1.0), (20, 3.0)]}


def test_wandb_offline_writes_a_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    with make_logger(tmp_path / "run", tensorboard=False, wandb_project="jaxppo-test",
                     config={"env": "CartPole-v1", "lr": 2.5e-4}) as logger:
        logger.log(128, {"episode_return": 1.0, "value_loss": float("nan")})
        logger.log(256, {"episode_return": 2.0, "value_loss": 0.5})

    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = list(runs[0].glob("run-*.wandb"))
    assert len(records) == 1  # the run's record file, for `wandb sync`
    from tests.wandb_records import read_run

    meta, history = read_run(records[0])
    assert meta["project"] == "jaxppo-test"
    assert (meta["config"]["env"], meta["config"]["lr"]) == ("CartPole-v1", 2.5e-4)
    assert [(row["_step"], row["episode_return"]) for row in history] == [(128, 1.0), (256, 2.0)]
    assert math.isnan(history[0]["value_loss"]) and history[1]["value_loss"] == 0.5
    assert len(read_csv(tmp_path / "run" / "metrics_log.csv")) == 3


def test_wandb_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(ImportError, match=r"pip install jaxppo\[wandb\]"):
        WandbSink("p", "r", {})


def test_stdout_sink_prints_one_compact_line_per_call():
    stream = io.StringIO()
    with MetricsLogger([StdoutSink(stream, keys=("episode_return", "approx_kl", "absent"))]) as logger:
        logger.log(12288, {"episode_return": 21.4375, "approx_kl": 0.0123456, "value_loss": 3.0})
        logger.log(24576, {"episode_return": float("nan"), "approx_kl": 0.5})
    assert stream.getvalue().splitlines() == [
        "step 12,288 | episode_return 21.44 | approx_kl 0.01235",
        "step 24,576 | episode_return nan | approx_kl 0.5",
    ]


def test_close_closes_every_sink_even_when_one_fails():
    first, second = RecordingSink(fail_on_close=True), RecordingSink()
    logger = MetricsLogger([first, second])
    logger.log(1, {"a": np.float32(0.5), "n": np.int64(2), "ok": np.bool_(True)})
    assert second.calls == [(1, {"a": 0.5, "n": 2, "ok": 1})]
    assert type(second.calls[0][1]["a"]) is float and type(second.calls[0][1]["n"]) is int
    with pytest.raises(OSError, match="disk gone"):
        logger.close()
    assert first.closed and second.closed
    logger.close()  # idempotent
    with pytest.raises(RuntimeError):
        logger.log(2, {"a": 1.0})


def test_log_metrics_history_logs_every_update_of_one_seed_at_its_env_steps():
    num_seeds, num_updates, steps_per_update = 2, 3, 512
    # a fake Metrics with leaves [S, U]: value = 100 * field index + 10 * seed + update
    fields = [f.name for f in dataclasses.fields(Metrics)]
    values = {name: 100.0 * i + 10 * np.arange(num_seeds)[:, None] + np.arange(num_updates)[None, :]
              for i, name in enumerate(fields)}
    values["env_steps"] = np.tile(steps_per_update * np.arange(1, num_updates + 1, dtype=np.int32), (num_seeds, 1))
    values["episode_return"][1, 2] = np.nan
    columns = metrics_to_columns(Metrics(**values))

    sink = RecordingSink()
    log_metrics_history(MetricsLogger([sink]), columns, seed=1)

    assert [step for step, _ in sink.calls] == [512, 1024, 1536]
    for update, (_, logged) in enumerate(sink.calls):
        assert sorted(logged) == sorted(set(fields) - {"env_steps"})
        for name in logged:
            expected = 100.0 * fields.index(name) + 10 + update
            if (name, update) == ("episode_return", 2):
                assert math.isnan(logged[name])
            else:
                assert logged[name] == expected, (name, update)

    with pytest.raises(ValueError, match="seed=2"):
        log_metrics_history(MetricsLogger([sink]), columns, seed=2)
    with pytest.raises(ValueError, match="env_steps"):
        log_metrics_history(MetricsLogger([sink]), {"x": np.zeros((1, 2))})
