"""Watch a trained policy: play whole episodes and write them as an animation (.gif, .mp4; Brax also .html), every
frame captioned with the env id, the episode, the step and the return so far.

    jaxppo.render("runs/cartpole", "episode.gif")                    # a run folder, or an exported policy file
    write_episode_gif(config, params, normalizers, "ep.gif")          # one seed's parameters in hand (e.g. a hook
                                                                      # after a training chunk)

Which renderer each suite uses is in jaxppo.renderers. The episodes are played by one jitted program
(jaxppo.playback); drawing happens on the host afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

DEFAULT_MAX_STEPS = 1000
"""Steps per episode when max_steps is not given: the env's time limit, at most this many."""

MIN_WIDTH = 384
"""Frames narrower than this are enlarged by a whole factor (pixel art stays sharp; the caption fits)."""


class Rendered(NamedTuple):
    """What a render wrote: the file, and the episodes it shows."""

    path: Path
    returns: np.ndarray  # float64 [episodes]: undiscounted return of each episode shown (up to max_steps)
    lengths: np.ndarray  # int [episodes]: its steps (max_steps where the episode did not end)
    num_frames: int  # frames in the animation (the sum of lengths); for .html, the states the viewer plays


class Video(NamedTuple):
    """Episodes drawn and captioned, ready to encode (or to log: frames uint8 [F, H, W, 3])."""

    frames: np.ndarray | None  # uint8 [F, H, W, 3], F = sum(lengths); None for the Brax HTML viewer
    html: str | None  # the Brax viewer page (fmt 'html' only)
    returns: np.ndarray  # float64 [episodes]
    lengths: np.ndarray  # int [episodes]


def render(run: Any, out: str | Path, *, episodes: int = 1, seed: int = 0, stochastic: bool = False,
           max_steps: int | None = None, seed_index: int = 0, fps: float = 30) -> Rendered:
    """Play episodes of a trained policy and write them as an animation at out (replaced if it exists).

    Args:
      run: a run folder written by `jaxppo train`, an exported policy file (`jaxppo export`), or what
        `jaxppo.load` returns.
      out: the file to write; its suffix picks the format: .gif, .mp4 (the video extra), or .html (Brax's viewer).
      episodes: episodes shown one after another (played in parallel).
      seed: key of the env resets (and, with stochastic, of the action draws).
      stochastic: sample actions instead of acting greedily. An exported policy samples exactly when it was
        exported with stochastic=True.
      max_steps: steps per episode at most (default: the env's time limit, at most DEFAULT_MAX_STEPS).
      seed_index: which seed of a multi-seed run folder.
      fps: frames per second of the animation.

    Returns:
      Rendered(path, returns [episodes], lengths [episodes], num_frames).

    Raises ValueError (one line, naming the argument or the env id) for an env without a renderer, a missing
    writer, or a policy that does not fit the request.
    """
    from jaxppo.playback import run_step

    num_envs = episodes
    if isinstance(run, (str, Path)) and Path(run).is_file():
        from jaxppo.export import check_platform, exported_step, load_exported

        policy = load_exported(Path(run))
        policy.check_stochastic(stochastic)
        check_platform(policy)
        env_id, step = policy.env_id, exported_step(policy)
        if policy.batch is not None:
            if episodes > policy.batch:
                raise ValueError(f"episodes={episodes}: {run} was exported for a batch of {policy.batch}")
            num_envs = policy.batch
    else:
        loaded = _load(run, seed_index)
        env_id, step = loaded.config.env, run_step(loaded.act, loaded.config.recurrent, stochastic)
    video = record_video(env_id, step, Path(out), episodes=episodes, num_envs=num_envs, seed=seed,
                         max_steps=max_steps)
    return write_video(video, Path(out), fps)


def write_episode_gif(config: Any, params: Any, normalizers: Any, out: str | Path, *, seed: int = 0,
                      episodes: int = 1, stochastic: bool = False, max_steps: int | None = None, fps: float = 30,
                      env: Any = None, env_params: Any = None) -> Rendered:
    """Play episodes with ONE seed's parameters and write them at out (.gif; .mp4 and Brax .html also work).

    What a training hook calls after a chunk: `write_episode_gif(config, params, normalizers, run_dir /
    f"videos/update_{update:06d}.gif", seed=update)` with that seed's params and normaliser statistics (leaves
    without the seed axis). Folders above out are created. env, env_params: only for a config.env='custom' run,
    its environment instance (as make_train takes it). Each call compiles the episode program once (seconds).

    Returns Rendered(path, returns, lengths, num_frames); ValueError as `render`.
    """
    video = episode_video(config, params, normalizers, Path(out).suffix, seed=seed, episodes=episodes,
                          stochastic=stochastic, max_steps=max_steps, env=env, env_params=env_params)
    return write_video(video, Path(out), fps)


def episode_video(config: Any, params: Any, normalizers: Any, suffix: str = ".gif", *, seed: int = 0,
                  episodes: int = 1, stochastic: bool = False, max_steps: int | None = None, env: Any = None,
                  env_params: Any = None) -> Video:
    """The frames write_episode_gif would encode, as a Video (frames uint8 [F, H, W, 3]) for loggers that take
    images or videos (e.g. TensorBoard's add_video)."""
    from jaxppo.agent import make_policy
    from jaxppo.envs import make_env
    from jaxppo.playback import run_step

    act = make_policy(config, env, env_params)

    def bound(obs, key=None, **kwargs):
        return act(params, obs, key, normalizers=normalizers, **kwargs)

    adapter = None if env is None else make_env(config.env, env, env_params)
    return record_video(config.env, run_step(bound, config.recurrent, stochastic), Path("episode" + suffix),
                        episodes=episodes, num_envs=episodes, seed=seed, max_steps=max_steps, env=adapter)


def _load(run: Any, seed_index: int) -> Any:
    """What jaxppo.load returns, for a run folder (or such an object passed as it is)."""
    if hasattr(run, "act") and hasattr(run, "config"):
        return run
    if not Path(run).is_dir():
        raise ValueError(f"run={str(run)!r}: neither a run folder (jaxppo train --out DIR) nor an exported policy "
                         "file (jaxppo export)")
    import jaxppo

    return jaxppo.load(run, seed=seed_index)


# ------------------------------------------------------------------------------------------------- the core
def record_video(env_id: str, step: Any, out: Path, *, episodes: int, num_envs: int, seed: int,
                 max_steps: int | None, env: Any = None) -> Video:
    """Play num_envs episodes with the policy step function (see jaxppo.playback), draw the first `episodes`.

    Checks the format, the writer and the env's renderer before playing. env: the adapter (default
    make_env(env_id)).
    """
    import jax

    from jaxppo import renderers, video
    from jaxppo.envs import make_env
    from jaxppo.playback import episode_lengths, play

    fmt = video.output_format(out)
    for name, value in (("episodes", episodes), ("max_steps", max_steps)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name}={value!r}: must be a whole number of at least 1")
    if num_envs < episodes:
        raise ValueError(f"episodes={episodes}: more than the {num_envs} environments played")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed}: must be in [0, 2^32)")
    env = make_env(env_id) if env is None else env
    renderers.check_renderable(env_id, env, fmt)
    video.check_writer(fmt)
    limit = env.spec.max_episode_steps
    num_steps = int(max_steps) if max_steps is not None else min(limit or DEFAULT_MAX_STEPS, DEFAULT_MAX_STEPS)

    played = jax.jit(lambda key: play(env, step, key, num_envs, num_steps, record_states=True))(jax.random.key(seed))
    played = jax.device_get(played)
    lengths = episode_lengths(played.done)[:episodes]
    rewards = np.asarray(played.rewards, np.float64)[:, :episodes]
    returns = np.array([rewards[: lengths[i], i].sum() for i in range(episodes)])
    ended = np.asarray(played.done)[:, :episodes].any(axis=0)

    def states_of(i):
        return jax.tree.map(lambda x: x[:, i], played.states)

    if fmt == "html":
        captions = [f"{env_id}  episode {i + 1}/{episodes}: {lengths[i]} steps{'' if ended[i] else ' (cut)'}, "
                    f"return {returns[i]:.2f}" for i in range(episodes)]
        page = renderers.brax_html(env, [(states_of(i), int(lengths[i])) for i in range(episodes)], captions)
        return Video(None, page, returns, lengths)
    frames = []
    for i in range(episodes):
        so_far = np.cumsum(rewards[: lengths[i], i])
        drawn = renderers.episode_frames(env_id, env, states_of(i), int(lengths[i]))
        for t, frame in enumerate(drawn):
            text = (f"{env_id}  ep {i + 1}/{episodes}  step {t + 1}/{lengths[i]}{'' if ended[i] else '+'}  "
                    f"return {so_far[t]:.2f}")
            frames.append(video.caption(enlarge(frame), text))
    return Video(np.stack(same_size(frames)), None, returns, lengths)


def enlarge(frame: np.ndarray, min_width: int = MIN_WIDTH) -> np.ndarray:
    """frame [H, W, 3] repeated by the smallest whole factor that makes it at least min_width wide."""
    factor = -(-min_width // frame.shape[1])
    return np.repeat(np.repeat(frame, factor, axis=0), factor, axis=1) if factor > 1 else frame


def same_size(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Frames padded (white, bottom and right) to the largest height and width among them."""
    height, width = max(f.shape[0] for f in frames), max(f.shape[1] for f in frames)
    if all(f.shape[:2] == (height, width) for f in frames):
        return frames
    padded = []
    for frame in frames:
        canvas = np.full((height, width, 3), 255, np.uint8)
        canvas[: frame.shape[0], : frame.shape[1]] = frame
        padded.append(canvas)
    return padded


def write_video(recorded: Video, out: Path, fps: float) -> Rendered:
    """Encode the video by out's suffix and write it atomically (folders above out are created)."""
    from jaxppo import video
    from jaxppo.outputs import write_bytes

    if not fps > 0:
        raise ValueError(f"fps={fps}: must be positive")
    fmt = video.output_format(out)
    if fmt == "html":
        data, count = recorded.html.encode(), int(np.sum(recorded.lengths))
    else:
        data, count = video.encode(fmt, list(recorded.frames), fps), len(recorded.frames)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, data)
    return Rendered(out, recorded.returns, recorded.lengths, count)
