"""jaxppo.loggers: every tracker sink read back from what it wrote (TensorBoard event files, W&B offline run)."""

import math
import sys

import numpy as np
import pytest

from jaxppo.loggers import MetricsLogger, TensorBoardSink, WandbSink, log_metrics_history, make_seed_loggers
from tests.helpers import read_tensorboard


class RecordingSink:
    def __init__(self, fail_on_close=False):
        self.calls, self.closed, self.fail_on_close = [], False, fail_on_close

    def log(self, step, metrics):
        self.calls.append((step, dict(metrics)))

    def close(self):
        self.closed = True
        if self.fail_on_close:
            raise OSError("disk gone")


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


def test_seed_loggers_write_one_tensorboard_run_per_seed(tmp_path):
    loggers = make_seed_loggers(tmp_path / "run", seeds=[3, 4], tensorboard=True, wandb_project=None)
    for index, logger in enumerate(loggers):
        logger.log(10, {"x": 1.0 + index})
        logger.log(20, {"x": 3.0})
        logger.close()
    assert sorted(p.name for p in (tmp_path / "run" / "tb").iterdir()) == ["seed_3", "seed_4"]
    assert read_tensorboard(tmp_path / "run" / "tb" / "seed_4") == {"x": [(10, 2.0), (20, 3.0)]}
    assert make_seed_loggers(tmp_path / "none", seeds=[0], tensorboard=False, wandb_project=None)[0].sinks == []


def test_wandb_offline_writes_a_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    (logger,) = make_seed_loggers(tmp_path / "run", [0], tensorboard=False, wandb_project="jaxppo-test",
                                  config={"env": "CartPole-v1", "lr": 2.5e-4})
    with logger:
        logger.log(128, {"episode_return": 1.0, "value_loss": float("nan")})
        logger.log(256, {"episode_return": 2.0, "value_loss": 0.5})

    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = list(runs[0].glob("run-*.wandb"))
    assert len(records) == 1  # the run's record file, for `wandb sync`
    from tests.wandb_records import read_run

    meta, history = read_run(records[0])
    assert meta["project"] == "jaxppo-test" and meta["group"] == "run" and meta["name"] == "run-seed0"
    assert (meta["config"]["env"], meta["config"]["lr"], meta["config"]["seed"]) == ("CartPole-v1", 2.5e-4, 0)
    assert [(row["_step"], row["episode_return"]) for row in history] == [(128, 1.0), (256, 2.0)]
    assert math.isnan(history[0]["value_loss"]) and history[1]["value_loss"] == 0.5


def test_wandb_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(ImportError, match=r"pip install jaxppo\[wandb\]"):
        WandbSink("p", "r", {})


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
    # metric columns [S, U]: value = 100 * column index + 10 * seed + update
    names = ["episode_return", "episode_length", "value_loss", "grad_norm"]
    columns = {name: 100.0 * i + 10 * np.arange(num_seeds)[:, None] + np.arange(num_updates)[None, :]
               for i, name in enumerate(names)}
    columns["env_steps"] = np.tile(steps_per_update * np.arange(1, num_updates + 1, dtype=np.int64), (num_seeds, 1))
    columns["episode_return"][1, 0] = np.nan  # placeholder: no episode ended yet -> not logged
    columns["value_loss"][1, 2] = np.nan  # a diverging loss -> logged as NaN

    sink = RecordingSink()
    log_metrics_history(MetricsLogger([sink]), columns, seed=1)

    assert [step for step, _ in sink.calls] == [512, 1024, 1536]
    for update, (_, logged) in enumerate(sink.calls):
        expected_names = set(names) - ({"episode_return"} if update == 0 else set())
        assert set(logged) == expected_names
        for name in logged:
            if (name, update) == ("value_loss", 2):
                assert math.isnan(logged[name])
            else:
                assert logged[name] == 100.0 * names.index(name) + 10 + update, (name, update)

    with pytest.raises(ValueError, match="seed=2"):
        log_metrics_history(MetricsLogger([sink]), columns, seed=2)
    with pytest.raises(ValueError, match="env_steps"):
        log_metrics_history(MetricsLogger([sink]), {"x": np.zeros((1, 2))})
