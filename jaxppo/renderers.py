"""How each environment suite draws its own states: recorded env states of one episode -> RGB frames (or, for
Brax, its HTML viewer), always through the suite's own renderer.

    suite                      renderer                                           needs
    gymnax classic control     gymnax.visualize.vis_gym (Gymnasium's pygame       pygame (the `render` extra)
                               drawing, no display)
    gymnax MinAtar, Catch,     gymnax.visualize.Visualizer (matplotlib)
      Pong, PointRobot, MetaMaze, FourRooms
    brax/<name> to .html       brax.io.html.render (a three.js viewer that
                               runs in the browser, loaded from a CDN)
    brax/<name> to .gif/.mp4   brax.io.image.render_array (MuJoCo's renderer)     OpenGL: MUJOCO_GL=egl on a GPU
                                                                                  machine, or osmesa
    jumanji/<id>               env.animate (matplotlib); its frames are kept
    craftax/<id>               craftax's make_craftax_pixel_renderer (JAX)

Every other gymnax id (DeepSea, bandits, Reacher, ...) has no renderer in gymnax: check_renderable says so in one
line. Episode states come as one pytree with leaves [L, ...] (host arrays); frames are uint8 [H, W, 3].
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import warnings
from typing import Any, Iterator

import jax
import numpy as np
from matplotlib import animation

from jaxppo.envs import split_env_id

CLASSIC_CONTROL = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0", "MountainCarContinuous-v0")
"""gymnax ids drawn by gymnax.visualize.vis_gym (also subclasses of their environments, e.g. jaxppo/CartPole-PO-v1)."""

VISUALIZED = ("Catch-bsuite", "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar",
              "SpaceInvaders-MinAtar", "Pong-misc", "PointRobot-misc", "MetaMaze-misc", "FourRooms-misc")
"""gymnax ids drawn by gymnax.visualize.Visualizer with matplotlib (gymnax 1.0's list)."""

GYMNAX_DPI = 64
"""Dots per inch of gymnax's 6 x 5 inch matplotlib figure (384 x 320 pixels)."""
JUMANJI_DPI = 40
"""Dots per inch of Jumanji's 10 x 10 inch animation figures (400 x 400 pixels)."""
BRAX_SIZE = (240, 320)
"""Height and width of Brax frames."""


def unstack(states: Any, length: int) -> list[Any]:
    """The first length steps of a pytree with leaves [T, ...] as a list of per-step pytrees."""
    return [jax.tree.map(lambda x, t=t: x[t], states) for t in range(length)]


# ------------------------------------------------------------------------------------------- which renderer
def gymnax_renderer(env: Any) -> tuple[str, str] | None:
    """('classic', id) or ('visualizer', id) for a gymnax environment gymnax can draw, else None."""
    import gymnax

    if env.name in VISUALIZED:
        return "visualizer", env.name
    if env.name in CLASSIC_CONTROL:
        return "classic", env.name
    for env_id in CLASSIC_CONTROL:  # a subclass keeps its parent's state, so its parent's drawing fits
        if isinstance(env, type(gymnax.make(env_id)[0])):
            return "classic", env_id
    return None


def check_renderable(env_id: str, env: Any, fmt: str) -> None:
    """ValueError (one line, naming the id) unless the suite of env_id can draw env to fmt ('gif', 'mp4', 'html').

    Runs before any rollout, so a missing renderer fails fast.
    """
    suite = split_env_id(env_id)[0]
    if fmt == "html" and suite != "brax":
        raise ValueError(f"env={env_id!r}: .html is the Brax viewer; write a .gif or .mp4 for this environment")
    if suite in ("gymnax", "jaxppo"):
        found = gymnax_renderer(env.env)
        if found is None:
            raise ValueError(f"env={env_id!r}: gymnax has no renderer for this environment (it draws "
                             f"{', '.join(CLASSIC_CONTROL + VISUALIZED)})")
        if found[0] == "classic" and importlib.util.find_spec("pygame") is None:
            raise ValueError(f"env={env_id!r}: gymnax draws classic control with pygame, which is not installed; "
                             "pip install -e \".[render]\"")
    elif suite == "jumanji":
        if not callable(getattr(env.env, "animate", None)):
            raise ValueError(f"env={env_id!r}: this Jumanji environment has no animation (env.animate)")
    elif suite == "brax" and fmt != "html":
        _check_mujoco_renderer(env_id)
    elif suite not in ("brax", "craftax"):
        raise ValueError(f"env={env_id!r}: no renderer for this environment")


def _check_mujoco_renderer(env_id: str) -> None:
    problem = mujoco_renderer_problem()
    if problem is not None:
        raise ValueError(f"env={env_id!r}: Brax frames come from MuJoCo's OpenGL renderer, which cannot start here "
                         f"({problem}; set MUJOCO_GL=egl on a GPU machine, or osmesa); write a .html file instead "
                         "(Brax's browser viewer)")


@functools.cache
def mujoco_renderer_problem() -> str | None:
    """Why MuJoCo's OpenGL renderer cannot start in this process (the error's type), or None when it can. Probed once
    per process: a second failed start aborts the whole process (a MuJoCo bug)."""
    import mujoco

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GLFW's own warnings before mujoco's error: the error says it all
            mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco/>"), 8, 8).close()
    except Exception as error:  # mujoco raises FatalError, AttributeError, ... when it finds no OpenGL
        return type(error).__name__
    return None


# ------------------------------------------------------------------------------------------------- frames
def episode_frames(env_id: str, env: Any, states: Any, length: int) -> list[np.ndarray]:
    """length frames, uint8 [H, W, 3], of one episode: frame t shows the state action t was taken in.

    states: the adapter's env states, leaves [>= length, ...]; env: the adapter (jaxppo.envs.make_env(env_id)).
    """
    suite = split_env_id(env_id)[0]
    steps = unstack(states, length)
    if suite in ("gymnax", "jaxppo"):
        kind, gymnax_id = gymnax_renderer(env.env)
        if kind == "classic":
            return _classic_control_frames(gymnax_id, env.env_params, steps)
        return _visualizer_frames(env.env, env.env_params, steps)
    if suite == "jumanji":
        return _jumanji_frames(env.env, steps)
    if suite == "craftax":
        return _craftax_frames(env.env, steps)
    if suite == "brax":
        from brax.io import image

        return [np.asarray(f)[..., :3] for f in image.render_array(env.env.sys, [s.pipeline_state for s in steps],
                                                                   *BRAX_SIZE)]
    raise ValueError(f"env={env_id!r}: no renderer for this environment")


@contextlib.contextmanager
def _headless_sdl() -> Iterator[None]:
    """SDL's dummy video and audio drivers while Gymnasium draws with pygame (unless the caller chose drivers): no
    display is needed and no ALSA or XDG errors are printed. The process environment is restored afterwards."""
    names = ("SDL_VIDEODRIVER", "SDL_AUDIODRIVER")
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ.setdefault(name, "dummy")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _classic_control_frames(gymnax_id: str, env_params: Any, steps: list[Any]) -> list[np.ndarray]:
    from gymnax.visualize import vis_gym

    with _headless_sdl():
        return [np.asarray(vis_gym.render_gym_frame(gymnax_id, state, env_params), np.uint8)[..., :3]
                for state in steps]


@contextlib.contextmanager
def _closing_new_figures() -> Iterator[None]:
    """Close every pyplot figure opened inside (a notebook would otherwise show them, and they hold memory)."""
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    try:
        yield
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)


def _canvas_rgb(figure: Any) -> np.ndarray:
    """uint8 [H, W, 3] of a matplotlib figure at its dpi."""
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _visualizer_frames(env: Any, env_params: Any, steps: list[Any]) -> list[np.ndarray]:
    from gymnax.visualize import Visualizer

    with _closing_new_figures():
        visualizer = Visualizer(env, env_params, steps)
        visualizer.fig.set_dpi(GYMNAX_DPI)
        visualizer.init()
        frames = []
        for t in range(len(steps)):
            visualizer.update(t)
            frames.append(_canvas_rgb(visualizer.fig))
    return frames


class FrameCollector(animation.AbstractMovieWriter):
    """A matplotlib movie writer that keeps each frame as uint8 [H, W, 3] instead of writing a file:
    `animation.save("unused", writer=collector, dpi=...)` fills collector.frames."""

    def __init__(self):
        super().__init__()
        self.frames: list[np.ndarray] = []

    def setup(self, fig, outfile, dpi=None):
        super().setup(fig, outfile, dpi)

    def grab_frame(self, **savefig_kwargs):
        from PIL import Image

        buffer = io.BytesIO()
        self.fig.savefig(buffer, **{**savefig_kwargs, "format": "png", "dpi": self.dpi})
        self.frames.append(np.asarray(Image.open(buffer).convert("RGB")))

    def finish(self):
        pass


def _jumanji_frames(env: Any, steps: list[Any]) -> list[np.ndarray]:
    """env.animate's frames, one per state. Viewers animate `states`, `states[1:]` or consecutive pairs (and an
    iterator loses its first item to matplotlib's initial draw), so the first state is put in front twice and the
    last len(steps) frames are kept: in every case those show steps[0], ..., steps[-1]."""
    collector = FrameCollector()
    with _closing_new_figures(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib warns that an iterator of frames has no length
        movie = env.animate([steps[0], steps[0], *steps], interval=100, save_path=None)
        movie.save("frames", writer=collector, dpi=JUMANJI_DPI)
    if len(collector.frames) < len(steps):
        raise ValueError(f"{type(env).__name__}.animate drew {len(collector.frames)} frames for {len(steps) + 2} "
                         "states; jaxppo cannot tell which state each frame shows")
    return collector.frames[len(collector.frames) - len(steps):]


def _craftax_frames(env: Any, steps: list[Any]) -> list[np.ndarray]:
    if type(env).__module__.startswith("craftax.craftax_classic"):
        from craftax.craftax_classic.constants import BLOCK_PIXEL_SIZE_IMG
        from craftax.craftax_classic.renderer import make_craftax_pixel_renderer
    else:
        from craftax.craftax.constants import BLOCK_PIXEL_SIZE_IMG
        from craftax.craftax.renderer import make_craftax_pixel_renderer
    draw = jax.jit(make_craftax_pixel_renderer(BLOCK_PIXEL_SIZE_IMG))
    return [np.clip(np.asarray(draw(state)), 0, 255).astype(np.uint8) for state in steps]


# -------------------------------------------------------------------------------------------- brax viewer
def brax_html(env: Any, episodes: list[tuple[Any, int]], captions: list[str]) -> str:
    """Brax's browser viewer (brax.io.html) playing the given episodes one after another, with one caption line
    per episode above it. episodes: [(states with leaves [T, ...], length)]."""
    import html

    from brax.io import html as brax_html_io

    pipeline = [s.pipeline_state for states, length in episodes for s in unstack(states, length)]
    page = brax_html_io.render(env.env.sys, pipeline)
    header = "".join(f"<div style=\"font-family: monospace\">{html.escape(text)}</div>\n" for text in captions)
    at = page.find(">", page.find("<body")) + 1 if "<body" in page else 0
    return page[:at] + "\n" + header + page[at:]
