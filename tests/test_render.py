"""jaxppo.render / jaxppo render: one captioned frame per step, for every suite's own renderer; episodes played by
jaxppo.playback; one-line errors for an env without a renderer, a missing writer, a wrong suffix.

One tiny recurrent CartPole run (2 updates) is trained for the module; the other suites are played by a random
policy step function through the same record_video -> write_video path that render() runs (no training needed to
check frames)."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jaxppo
from jaxppo.playback import episode_lengths, episode_returns, play, run_step
from jaxppo.render import episode_video, record_video, write_episode_gif, write_video
from jaxppo.video import CAPTION_HEIGHT
from tests import helpers

TINY_TRAIN = ["--num-envs", "4", "--num-steps", "8", "--num-minibatches", "2", "--num-epochs", "1",
              "--total-timesteps", "64", "--quiet"]


def _needs(package):
    return pytest.mark.skipif(importlib.util.find_spec(package) is None, reason=f"{package} is not installed")


@pytest.fixture(scope="module")
def gru_run(tmp_path_factory):
    """CartPole-v1 with memory='gru', two updates: a recurrent, discrete policy in a run folder."""
    out = tmp_path_factory.mktemp("runs") / "gru"
    assert helpers.train_cli("--env", "CartPole-v1", "--memory", "gru", "--memory-size", "8", *TINY_TRAIN,
                             "--out", str(out)) == 0
    return out


def random_step(num_actions: int):
    """A policy step function (jaxppo.playback) drawing uniformly among the legal discrete actions."""

    def step(obs, action_mask, carry, first, key):
        logits = jnp.zeros((obs.shape[0], num_actions))
        if action_mask is not None:
            logits = jnp.where(action_mask, logits, -jnp.inf)
        return jax.random.categorical(key, logits).astype(jnp.int32), carry

    return step


def gif_frames(path) -> list[np.ndarray]:
    image = Image.open(path)
    frames = []
    for index in range(image.n_frames):
        image.seek(index)
        frames.append(np.asarray(image.convert("RGB")))
    return frames


def has_text(frame: np.ndarray) -> bool:
    """The caption strip above the picture holds dark pixels (text) on white."""
    strip = frame[:CAPTION_HEIGHT].astype(int).sum(axis=-1)
    return bool((strip < 200).sum() > 20 and (strip > 700).mean() > 0.5)


# --------------------------------------------------------------------------------------------------- playback
def test_episode_lengths_and_returns_are_those_of_each_first_episode():
    done = np.array([[0, 0, 1],
                     [1, 0, 0],
                     [0, 0, 1],
                     [1, 0, 0]], bool)  # [T=4, B=3]
    rewards = np.array([[1.0, 2.0, 3.0],
                        [10.0, 2.0, 30.0],
                        [100.0, 2.0, 300.0],
                        [1000.0, 2.0, 3000.0]])
    lengths = episode_lengths(done)
    # env 0 ends with step 1 (2 steps), env 1 never ends (all 4 steps), env 2 ends with step 0 (1 step)
    np.testing.assert_array_equal(lengths, [2, 4, 1])
    np.testing.assert_array_equal(episode_returns(rewards, lengths), [1 + 10, 2 * 4, 3])


def test_play_records_the_state_each_action_was_taken_in():
    # Pendulum: deterministic dynamics, so the recorded states can be replayed by hand with gymnax.
    import gymnax

    from jaxppo.envs import make_env

    env = make_env("Pendulum-v1")

    def push(obs, mask, carry, first, key):
        return jnp.full((obs.shape[0], 1), 0.5), carry

    played = jax.device_get(play(env, push, jax.random.key(0), 2, 5, record_states=True))
    gym_env, params = gymnax.make("Pendulum-v1")
    for b in range(2):
        state = jax.tree.map(lambda x: x[0, b], played.states)
        for t in range(4):
            _, state, reward, _, _, _ = gym_env.step(jax.random.key(0), state, jnp.array([0.5]), params)
            np.testing.assert_allclose(played.states.theta[t + 1, b], state.theta, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(played.rewards[t, b], reward, rtol=1e-5, atol=1e-5)
    assert not played.done.any()


def test_run_step_acts_as_the_runs_act_and_threads_the_carry(gru_run):
    run = jaxppo.load(gru_run)
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    first, later = np.ones(5, bool), np.zeros(5, bool)
    greedy = run_step(run.act, recurrent=True, stochastic=False)
    actions, carry = greedy(obs, None, None, first, jax.random.key(0))  # the key is ignored when greedy
    want, want_carry = run.act(obs)
    np.testing.assert_array_equal(actions, want)
    actions, carry = greedy(2 * obs, None, carry, later, None)
    want, want_next = run.act(2 * obs, carry=want_carry, first=later)
    np.testing.assert_array_equal(actions, want)
    # A two-update policy rarely lets the carry change an argmax: the carry itself must follow.
    for got, expected in zip(jax.tree.leaves(carry), jax.tree.leaves(want_next), strict=True):
        np.testing.assert_array_equal(got, expected)
    sampled, _ = run_step(run.act, recurrent=True, stochastic=True)(obs, None, carry, later, jax.random.key(3))
    np.testing.assert_array_equal(sampled, run.act(obs, jax.random.key(3), carry=want_carry, first=later)[0])


# ----------------------------------------------------------------------------------------- classic control
@_needs("pygame")
def test_classic_control_gif_has_one_captioned_frame_per_step(gru_run, tmp_path):
    result = jaxppo.render(gru_run, tmp_path / "cartpole.gif", episodes=2, seed=3)
    frames = gif_frames(tmp_path / "cartpole.gif")
    assert len(frames) == result.num_frames == int(result.lengths.sum())
    # A two-update policy drops the pole long before the 500-step limit; CartPole pays 1 per step.
    assert np.all(result.lengths < 500) and np.all(result.lengths >= 5)
    np.testing.assert_array_equal(result.returns, result.lengths)
    assert all(has_text(f) for f in frames)
    assert frames[0].shape == (400 + CAPTION_HEIGHT, 600, 3)  # gymnax's Gymnasium drawing, 600 x 400
    first, last = frames[0][CAPTION_HEIGHT:], frames[result.lengths[0] - 1][CAPTION_HEIGHT:]
    assert np.abs(first.astype(int) - last).sum() > 0  # the pole has moved


@_needs("pygame")
def test_frames_follow_the_played_episode_for_a_recurrent_policy(gru_run):
    # The frames are drawn from the states the recurrent policy visited: replaying the same policy and key through
    # jaxppo.playback gives the same lengths, and each frame is gymnax's drawing of the recorded state.
    from gymnax.visualize import vis_gym

    from jaxppo.envs import make_env

    run = jaxppo.load(gru_run)
    video = episode_video(run.config, run.params, run.normalizers, seed=5, max_steps=20)
    env = make_env("CartPole-v1")
    step = run_step(run.act, recurrent=True, stochastic=False)
    played = jax.device_get(play(env, step, jax.random.key(5), 1, 20, record_states=True))
    length = int(episode_lengths(played.done)[0])
    assert video.frames.shape[0] == length == int(video.lengths[0])
    for t in (0, length - 1):
        state = jax.tree.map(lambda x: x[t, 0], played.states)
        expected = vis_gym.render_gym_frame("CartPole-v1", state, env.env_params)
        np.testing.assert_array_equal(video.frames[t, CAPTION_HEIGHT:], expected)


@_needs("pygame")
def test_render_command_cuts_episodes_at_max_steps(gru_run, tmp_path, capsys):
    out = tmp_path / "cut.gif"
    assert helpers.cli.main(["render", str(gru_run), "--out", str(out), "--episodes", "2", "--max-steps", "3",
                             "--fps", "10"]) == 0
    printed = capsys.readouterr().out
    assert "episode 1: return 3.00 over 3 steps" in printed and "episode 2: return 3.00 over 3 steps" in printed
    assert f"done: 6 frames -> {out}" in printed
    assert Image.open(out).n_frames == 6 and Image.open(out).info["duration"] == 100
    line = helpers.usage_error(["render", str(gru_run), "--out", str(out)], capsys)
    assert "already exists; choose another --out or pass --overwrite" in line


@_needs("imageio_ffmpeg")
@_needs("pygame")
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # the test's ffmpeg reader is a subprocess
def test_mp4_has_one_frame_per_step(gru_run, tmp_path):
    import imageio_ffmpeg

    result = jaxppo.render(gru_run, tmp_path / "cartpole.mp4", max_steps=12, fps=12)
    reader = imageio_ffmpeg.read_frames(str(tmp_path / "cartpole.mp4"))
    meta = next(reader)
    assert sum(1 for _ in reader) == result.num_frames == int(result.lengths[0])
    assert tuple(meta["size"]) == (600, 400 + CAPTION_HEIGHT)


# --------------------------------------------------------------------------------------------------- MinAtar
def test_minatar_gif_has_one_frame_per_step(tmp_path):
    out = tmp_path / "breakout.gif"
    video = record_video("Breakout-MinAtar", random_step(3), out, episodes=1, num_envs=1, seed=0, max_steps=15)
    result = write_video(video, out, fps=10)
    frames = gif_frames(out)
    assert len(frames) == result.num_frames == int(result.lengths[0]) >= 5
    assert frames[0].shape == (320 + CAPTION_HEIGHT, 384, 3)  # gymnax's 6 x 5 inch figure at 64 dpi
    assert all(has_text(f) for f in frames)


# --------------------------------------------------------------------------------------------------- Jumanji
@_needs("jumanji")
def test_jumanji_frames_show_each_state_once(tmp_path):
    # Knapsack's viewer animates `states`; every step packs an item, so no two consecutive frames may be equal (a
    # frame showing the padding state twice, or a state dropped at the end, would be).
    out = tmp_path / "knapsack.gif"
    video = record_video("jumanji/Knapsack-v1", random_step(50), out, episodes=1, num_envs=2, seed=1,
                         max_steps=None)
    length = int(video.lengths[0])
    assert video.frames.shape == (length, 400 + CAPTION_HEIGHT, 400, 3) and length >= 5
    pictures = video.frames[:, CAPTION_HEIGHT:].astype(int)
    assert all(np.abs(pictures[t + 1] - pictures[t]).sum() > 0 for t in range(length - 1))
    assert write_video(video, out, fps=5).num_frames == Image.open(out).n_frames == length


def reset_states(env_id: str, count: int):
    """(adapter, env states with leaves [count, ...]): count fresh episodes' first states (no step compiled)."""
    from jaxppo.envs import make_env

    env = make_env(env_id)
    states, _, _ = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(0), count))
    return env, jax.device_get(states)


def pick(states, order):
    return jax.tree.map(lambda x: x[np.asarray(order)], states)


@_needs("jumanji")
def test_jumanji_viewers_that_skip_the_first_state_still_give_one_frame_per_state():
    # Snake's viewer animates states[1:]; TSP's animates consecutive pairs: frame t must still show state t. With
    # states (a, a, b), frames 0 and 1 are equal and frame 2 differs; with (a, b, b), frames 1 and 2 are equal.
    from jaxppo import renderers

    for env_id in ("jumanji/Snake-v1", "jumanji/TSP-v1"):
        env, states = reset_states(env_id, 2)
        for order, same, other in (((0, 0, 1), (0, 1), 2), ((0, 1, 1), (1, 2), 0)):
            frames = [f.astype(int) for f in renderers.episode_frames(env_id, env, pick(states, order), 3)]
            assert len(frames) == 3
            assert np.array_equal(frames[same[0]], frames[same[1]]), (env_id, order)
            assert np.abs(frames[other] - frames[same[0]]).sum() > 0, (env_id, order)


# ------------------------------------------------------------------------------------------------------ Brax
def _brax_states(page: str) -> int:
    system = re.search(r'var system = "([^"]+)"', page).group(1)
    return len(json.loads(zlib.decompress(base64.b64decode(system)))["states"]["x"])


@_needs("brax")
def test_brax_html_viewer_plays_every_step_and_frames_need_opengl(tmp_path):
    from jaxppo import renderers

    env_id = "brax/inverted_pendulum@spring"  # the cheapest pipeline to compile; the viewer is the same

    def zero_step(obs, mask, carry, first, key):
        return jnp.zeros((obs.shape[0], 1)), carry

    out = tmp_path / "pendulum.html"
    video = record_video(env_id, zero_step, out, episodes=2, num_envs=2, seed=0, max_steps=25)
    result = write_video(video, out, fps=30)
    page = out.read_text()
    assert _brax_states(page) == result.num_frames == int(result.lengths.sum())
    assert page.count(f"{env_id}  episode ") == 2  # one caption line per episode
    if renderers.mujoco_renderer_problem() is not None:  # no OpenGL here: a .gif is a one-line error naming .html
        with pytest.raises(ValueError, match=r"^env='brax/inverted_pendulum@spring': Brax frames come from MuJoCo's "
                                             r"OpenGL renderer, .*write a \.html file instead"):
            record_video(env_id, zero_step, tmp_path / "p.gif", episodes=1, num_envs=1, seed=0, max_steps=3)
    else:
        gif = tmp_path / "pendulum.gif"
        video = record_video(env_id, zero_step, gif, episodes=1, num_envs=1, seed=0, max_steps=4)
        assert write_video(video, gif, fps=30).num_frames == Image.open(gif).n_frames == int(video.lengths[0])


# --------------------------------------------------------------------------------------------------- Craftax
@_needs("craftax")
def test_craftax_frames_come_from_its_pixel_renderer():
    from jaxppo import renderers

    env_id = "craftax/Craftax-Classic-Symbolic-v1"
    env, states = reset_states(env_id, 2)
    frames = renderers.episode_frames(env_id, env, pick(states, (0, 1, 0)), 3)
    assert len(frames) == 3 and frames[0].dtype == np.uint8 and frames[0].shape[-1] == 3
    assert frames[0].std() > 10  # a textured map, not a blank image
    np.testing.assert_array_equal(frames[2], frames[0])  # frame t is drawn from state t: two worlds, a then b then a
    assert np.abs(frames[1].astype(int) - frames[0]).sum() > 0


# ---------------------------------------------------------------------------------------------------- errors
def test_env_without_renderer_is_one_line_error(tmp_path):
    config = jaxppo.PPOConfig(env="DeepSea-bsuite")
    with pytest.raises(ValueError, match=r"^env='DeepSea-bsuite': gymnax has no renderer for this environment "
                                         r"\(it draws Acrobot-v1, .*FourRooms-misc\)$"):
        write_episode_gif(config, None, None, tmp_path / "x.gif")  # checked before acting
    assert not (tmp_path / "x.gif").exists()


@_needs("pygame")
def test_render_command_errors_are_one_line(gru_run, tmp_path, capsys, monkeypatch):
    line = helpers.usage_error(["render", str(gru_run), "--out", str(tmp_path / "x.avi")], capsys)
    assert line.endswith(f"--out '{tmp_path / 'x.avi'}': write a .gif, .mp4 (the video extra) or .html (Brax only) "
                         "file")
    line = helpers.usage_error(["render", str(gru_run), "--out", str(tmp_path / "x.html")], capsys)
    assert "render: env='CartPole-v1': .html is the Brax viewer; write a .gif or .mp4" in line
    line = helpers.usage_error(["render", str(gru_run), "--out", str(tmp_path / "x.gif"), "--episodes", "0"], capsys)
    assert line.endswith("--episodes 0: must be a whole number of at least 1")
    line = helpers.usage_error(["render", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.gif")], capsys)
    assert "does not exist; pass a run folder" in line

    real_find_spec = importlib.util.find_spec

    def without(*names):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name in names else real_find_spec(name, *a))

    without("imageio_ffmpeg")
    line = helpers.usage_error(["render", str(gru_run), "--out", str(tmp_path / "x.mp4")], capsys)
    assert line.endswith("writing .mp4 needs the imageio-ffmpeg package: pip install -e \".[video]\" (or write a "
                         ".gif)")
    without("pygame")
    line = helpers.usage_error(["render", str(gru_run), "--out", str(tmp_path / "x.gif")], capsys)
    assert line.endswith("env='CartPole-v1': gymnax draws classic control with pygame, which is not installed; pip "
                         "install -e \".[render]\"")
    assert not list(tmp_path.iterdir())


def test_training_writes_an_episode_gif_every_n_updates(tmp_path):
    # `jaxppo train --video-every N`: after updates N, 2N, ... (and the last) one greedy episode of the first seed,
    # one frame per step, whose return the progress line states.
    from jaxppo import runner

    config = jaxppo.PPOConfig(env="CartPole-v1", num_envs=4, num_steps=8, num_minibatches=2, total_timesteps=4 * 8 * 5)
    lines = []
    result = runner.train_run(config, tmp_path / "run", runner.RunOptions(video_every=2, tensorboard=True),
                              quiet=False, stream=_Lines(lines))
    videos = sorted((tmp_path / "run" / "videos").iterdir())
    assert [v.name for v in videos] == ["update_000002.gif", "update_000004.gif", "update_000005.gif"]
    said = [line for line in lines if line.startswith("video after update 5:")]
    assert len(said) == 1 and result.finished
    episode_return = float(said[0].split("(return ")[1].rstrip(")"))
    assert len(gif_frames(videos[-1])) == int(episode_return)  # CartPole: reward 1 per step
    # TensorBoard got a strip of 8 frames per video, at the env step of each.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb" / "seed_0"), size_guidance={"images": 0})
    events.Reload()
    images = events.Images("episode")
    assert [image.step for image in images] == [64, 128, 160]
    assert images[-1].width == 8 * gif_frames(videos[-1])[0].shape[1]


class _Lines:
    """A text stream collecting whole lines."""

    def __init__(self, lines):
        self.lines = lines

    def write(self, text):
        self.lines.extend(line for line in text.splitlines() if line)

    def flush(self):
        pass
