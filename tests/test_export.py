"""jaxppo.export / jaxppo export: a trained policy serialised with jax.export runs in a fresh process that never
imports jaxppo and acts exactly as `jaxppo.load(run).act` (compiled) on the same platform, for discrete, continuous,
masked and recurrent policies; the README example runs as written; eval and render accept the exported file; one-line errors.

One tiny run (2 updates) per policy kind is trained for the module and exported once."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxppo
from jaxppo.export import evaluate_exported, export_policy, load_exported, sidecar_path
from tests import helpers

TINY_TRAIN = ["--num-envs", "4", "--num-steps", "8", "--num-minibatches", "2", "--num-epochs", "1",
              "--total-timesteps", "64", "--quiet"]
KINDS = {
    "discrete": ["--env", "CartPole-v1", "--normalize-observations"],
    "continuous": ["--env", "Pendulum-v1", "--normalize-observations"],
    "masked": ["--env", "jumanji/Knapsack-v1"],
    "recurrent": ["--env", "jaxppo/CartPole-PO-v1", "--memory", "gru", "--memory-size", "8"],
}
"""Policy kind -> the train flags of its tiny run."""
BATCH = 256


def _kinds():
    return [k for k in KINDS if k != "masked" or importlib.util.find_spec("jumanji") is not None]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """kind -> a finished run folder."""
    folder = tmp_path_factory.mktemp("runs")
    for kind in _kinds():
        assert helpers.train_cli(*KINDS[kind], *TINY_TRAIN, "--out", str(folder / kind)) == 0
    return {kind: folder / kind for kind in _kinds()}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """kind -> its greedy policy exported with the defaults (dynamic batch, cpu and cuda)."""
    folder = tmp_path_factory.mktemp("exported")
    return {kind: export_policy(run, folder / f"{kind}.jaxexport").path for kind, run in runs.items()}


def policy_inputs(kind: str, obs_shape, num_actions: int, seed: int = 0) -> dict[str, np.ndarray]:
    """BATCH observations (and legal-action masks with at least one legal action per row for the masked kind)."""
    rng = np.random.default_rng(seed)
    inputs = {"obs": (2.0 * rng.normal(size=(BATCH, *obs_shape))).astype(np.float32)}
    if kind == "masked":
        mask = rng.random((BATCH, num_actions)) < 0.3
        mask[np.arange(BATCH), rng.integers(0, num_actions, BATCH)] = True
        inputs["action_mask"] = mask
    return inputs


FRESH_PROCESS = r"""
import json, sys
import numpy as np
import jax
from jax import export

for case in json.loads(sys.argv[1]):
    exp = export.deserialize(bytearray(open(case["file"], "rb").read()))
    meta = json.load(open(case["file"] + ".json"))
    given = dict(np.load(case["inputs"]))
    batch = given["obs"].shape[0]
    names = [entry["name"] for entry in meta["inputs"]]
    if meta["memory"]:  # episode start: zero carry, first=True; then the returned carry, first=False
        given["carry"] = tuple(np.zeros((batch, *leaf["shape"]), leaf["dtype"]) for leaf in meta["memory"]["carry"])
        given["first"] = np.ones(batch, bool)
        actions, carry = exp.call(*[given[name] for name in names])
        given["carry"], given["first"] = carry, np.zeros(batch, bool)
        second, carry = exp.call(*[given[name] for name in names])
        np.savez(case["outputs"], actions=actions, second=second, **{f"carry{i}": c for i, c in enumerate(carry)})
    else:
        np.savez(case["outputs"], actions=exp.call(*[given[name] for name in names]))
assert not [m for m in sys.modules if m == "jaxppo" or m.startswith("jaxppo.")], "jaxppo was imported"
print("ok on", jax.default_backend(), exp.platforms)
"""


def test_round_trip_in_a_fresh_process_acts_exactly_as_load_act(runs, exported, tmp_path):
    cases, expected, eager = [], {}, {}
    for kind, path in exported.items():
        meta = load_exported(path).meta
        num_actions = meta["action"].get("num_actions", 0)
        inputs = policy_inputs(kind, meta["observation"]["shape"], num_actions)
        np.savez(tmp_path / f"{kind}_in.npz", **inputs)
        cases.append({"file": str(path), "inputs": str(tmp_path / f"{kind}_in.npz"),
                      "outputs": str(tmp_path / f"{kind}_out.npz")})
        run = jaxppo.load(runs[kind])
        # Exact: the compiled act (the same XLA program on the same platform and batch). The eager act runs op by op
        # and may differ in the last bit of a continuous action (XLA fuses the normalisation); argmaxes match it too.
        if kind == "recurrent":  # a fresh episode, then one more step from the carry it returned
            act = jax.jit(lambda obs, carry, first: run.act(obs, carry=carry, first=first))
            actions, carry = act(inputs["obs"], None, None)
            second, carry2 = act(inputs["obs"], carry, np.zeros(BATCH, bool))
            expected[kind] = {"actions": actions, "second": second,  # and the carry, which the argmaxes of a
                              **{f"carry{i}": c for i, c in enumerate(jax.tree.leaves(carry2))}}  # tiny GRU hide
            eager[kind] = {"actions": run.act(inputs["obs"])[0],
                           "second": run.act(inputs["obs"], carry=carry, first=np.zeros(BATCH, bool))[0]}
        else:
            act = jax.jit(lambda obs, mask: run.act(obs, action_mask=mask))
            expected[kind] = {"actions": act(inputs["obs"], inputs.get("action_mask"))}
            eager[kind] = {"actions": run.act(inputs["obs"], action_mask=inputs.get("action_mask"))}
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, json.dumps(cases)], env=helpers.subprocess_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "ok on cpu ('cpu', 'cuda')" in result.stdout, result.stderr[-3000:]
    for kind, outputs in expected.items():
        got = np.load(tmp_path / f"{kind}_out.npz")
        for name, want in outputs.items():
            want = np.asarray(want)
            assert got[name].dtype == want.dtype and got[name].shape == want.shape == (BATCH, *want.shape[1:])
            np.testing.assert_array_equal(got[name], want, err_msg=f"{kind} {name}")
            if kind == "continuous":
                np.testing.assert_allclose(got[name], eager[kind][name], rtol=1e-5, atol=1e-7)
            elif name in eager[kind]:
                np.testing.assert_array_equal(got[name], eager[kind][name], err_msg=f"{kind} {name} (eager act)")
    if "masked" in expected:  # the masks were applied: every greedy action is legal, and not always the same
        actions, mask = np.load(tmp_path / "masked_out.npz")["actions"], np.load(tmp_path / "masked_in.npz")["action_mask"]
        assert mask[np.arange(BATCH), actions].all() and len(set(actions.tolist())) > 1


def test_sidecar_describes_inputs_outputs_and_the_run(exported, runs):
    names = {"discrete": ["obs"], "continuous": ["obs"], "masked": ["obs", "action_mask"],
             "recurrent": ["obs", "carry", "first"]}
    for kind, path in exported.items():
        meta = json.loads(sidecar_path(path).read_text())
        assert [entry["name"] for entry in meta["inputs"]] == names[kind], kind
        assert meta["inputs"][0]["shape"][0] == "B" and meta["batch"] is None and meta["platforms"] == ["cpu", "cuda"]
        assert meta["env"] == json.loads((runs[kind] / "config.json").read_text())["env"] == meta["config"]["env"]
        assert meta["jaxppo_version"] == jaxppo.__version__ and meta["jax_version"] == jax.__version__
    assert json.loads(sidecar_path(exported["discrete"]).read_text())["action"] == \
        {"kind": "discrete", "num_actions": 2, "shape": [], "dtype": "int32"}
    continuous = json.loads(sidecar_path(exported["continuous"]).read_text())["action"]
    assert continuous["kind"] == "continuous" and continuous["shape"] == [1] and continuous["high"] == [2.0]
    memory = json.loads(sidecar_path(exported["recurrent"]).read_text())["memory"]
    assert memory == {"kind": "gru", "carry": [{"shape": [8], "dtype": "float32"}] * 2}  # actor and critic GRUs


def test_readme_example_runs_without_jaxppo(runs, exported, tmp_path):
    readme = (helpers.ROOT / "README.md").read_text()
    code = re.search(r"<!-- exported-policy-example -->\s*```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    shutil.copy(exported["discrete"], tmp_path / "policy.jaxexport")
    shutil.copy(sidecar_path(exported["discrete"]), tmp_path / "policy.jaxexport.json")
    check = "\nimport sys\nassert 'jaxppo' not in sys.modules\nprint('actions', actions.tolist())\n"
    result = subprocess.run([sys.executable, "-c", code + check], cwd=tmp_path, env=helpers.subprocess_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.split("actions ", 1)[1])
    want = jaxppo.load(runs["discrete"]).act(np.zeros((8, 4), np.float32))
    assert printed == np.asarray(want).tolist()


def test_lowers_for_cuda_and_tpu_here_with_a_fixed_batch(runs, tmp_path):
    policy = export_policy(runs["discrete"], tmp_path / "all.jaxexport", platforms="cpu,cuda,tpu", batch=8)
    again = load_exported(tmp_path / "all.jaxexport").exported
    assert again.platforms == ("cpu", "cuda", "tpu") and policy.meta["platforms"] == ["cpu", "cuda", "tpu"]
    assert again.in_avals[0].shape == (8, 4) and policy.meta["batch"] == 8
    obs = policy_inputs("discrete", (4,), 2, seed=1)["obs"][:8]
    np.testing.assert_array_equal(again.call(obs), jaxppo.load(runs["discrete"]).act(obs))
    with pytest.raises(ValueError, match="not for this machine's cpu"):
        evaluate_exported(load_exported(export_policy(runs["discrete"], tmp_path / "tpu.jaxexport",
                                                      platforms=["tpu"]).path))


def test_stochastic_export_samples_as_act_with_the_same_key(runs, tmp_path, capsys):
    path = export_policy(runs["continuous"], tmp_path / "sampling.jaxexport", stochastic=True, batch=BATCH).path
    policy = load_exported(path)
    assert [entry["name"] for entry in policy.meta["inputs"]] == ["obs", "key"]
    assert policy.meta["key"]["shape"] == [2] and policy.meta["key"]["dtype"] == "uint32"
    obs = policy_inputs("continuous", (3,), 0)["obs"]
    key = jax.random.key(7)
    sampled = policy.exported.call(obs, jax.random.key_data(key))
    run = jaxppo.load(runs["continuous"])
    np.testing.assert_array_equal(sampled, jax.jit(run.act)(obs, key))  # the compiled act, as in the round trip
    assert not np.array_equal(sampled, policy.exported.call(obs, jax.random.key_data(jax.random.key(8))))
    line = helpers.usage_error(["eval", str(path)], capsys)
    assert "was exported stochastic: it samples, so ask for sampled actions (--stochastic" in line


@pytest.mark.parametrize("kind", ["masked", "recurrent"])
def test_eval_and_render_of_the_exported_file_play_as_the_run(kind, runs, exported, tmp_path, capsys):
    # The exported file is stepped through jaxppo.playback exactly as the run's own act: same episodes.
    if kind not in runs:
        pytest.skip("jumanji is not installed")
    from jaxppo.envs import make_env
    from jaxppo.playback import episode_lengths, episode_returns, play, run_step

    run = jaxppo.load(runs[kind])
    env = make_env(run.config.env)
    limit = min(env.spec.max_episode_steps, 1000)
    step = run_step(run.act, run.config.recurrent, stochastic=False)
    played = jax.device_get(jax.jit(lambda key: play(env, step, key, 3, limit))(jax.random.key(4)))
    want_lengths = episode_lengths(played.done)
    returns, lengths = evaluate_exported(load_exported(exported[kind]), num_episodes=3, seed=4, max_steps=limit)
    np.testing.assert_array_equal(lengths, want_lengths)
    np.testing.assert_allclose(returns, episode_returns(played.rewards, want_lengths), rtol=1e-6)

    if kind == "recurrent":  # the step function threads the file's carry (a tiny GRU's argmaxes may not show it)
        from jaxppo.export import exported_step

        obs = policy_inputs(kind, (2,), 2)["obs"][:5]
        step = exported_step(load_exported(exported[kind]))
        _, carry = step(obs, None, None, np.ones(5, bool), None)
        _, carry = step(obs, None, carry, np.zeros(5, bool), None)
        act = jax.jit(lambda obs, carry, first: run.act(obs, carry=carry, first=first))
        want = act(obs, act(obs, None, None)[1], np.zeros(5, bool))[1]
        for got, expected in zip(jax.tree.leaves(carry), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(got, expected)
    assert helpers.cli.main(["eval", str(exported[kind]), "--num-episodes", "3", "--seed", "4"]) == 0
    assert f"done: mean return {returns.mean():.2f}" in capsys.readouterr().out
    if kind == "masked":  # a Knapsack GIF from the exported file: one frame per step of the played episodes
        from PIL import Image

        out = tmp_path / "knapsack.gif"
        assert helpers.cli.main(["render", str(exported[kind]), "--out", str(out), "--episodes", "3",
                                 "--seed", "4"]) == 0
        assert Image.open(out).n_frames == int(want_lengths.sum())
        assert f"episode 1: return {returns[0]:.2f} over {lengths[0]} steps" in capsys.readouterr().out


def test_damaged_or_unknown_files_are_refused_in_one_line(exported, runs, tmp_path, capsys, monkeypatch):
    damaged = tmp_path / "damaged.jaxexport"
    data = bytearray(exported["discrete"].read_bytes())
    data[len(data) // 2] ^= 1
    damaged.write_bytes(bytes(data))
    shutil.copy(sidecar_path(exported["discrete"]), sidecar_path(damaged))
    with pytest.raises(ValueError, match="damaged.jaxexport does not match the checksum in damaged.jaxexport.json"):
        load_exported(damaged)
    line = helpers.usage_error(["eval", str(damaged)], capsys)
    assert "eval: " in line and "does not match the checksum" in line
    line = helpers.usage_error(["render", str(damaged), "--out", str(tmp_path / "x.gif")], capsys)
    assert "render: " in line and "does not match the checksum" in line

    out = str(tmp_path / "p.jaxexport")
    line = helpers.usage_error(["export", str(runs["discrete"]), "--out", out, "--platforms", "cpu,gpu"], capsys)
    assert line.endswith("--platforms cpu,gpu: unknown platform 'gpu' (GPUs are cuda or rocm); choose from cpu, "
                         "cuda, rocm, tpu, comma-separated")
    line = helpers.usage_error(["export", str(runs["discrete"]), "--out", out, "--batch", "0"], capsys)
    assert line.endswith("--batch '0': give a positive number of observations per call, or 'dynamic'")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "flatbuffers" else real_find_spec(name, *a))
    line = helpers.usage_error(["export", str(runs["discrete"]), "--out", out], capsys)
    assert line.endswith("jax.export (de)serialisation needs the flatbuffers package: pip install -e \".[export]\" "
                         "(or pip install flatbuffers)")
    assert not (tmp_path / "p.jaxexport").exists()
    monkeypatch.undo()
    assert helpers.cli.main(["export", str(runs["discrete"]), "--out", out]) == 0
    assert "done: " in capsys.readouterr().out
    line = helpers.usage_error(["export", str(runs["discrete"]), "--out", out], capsys)
    assert "already exists; choose another --out or pass --overwrite" in line
