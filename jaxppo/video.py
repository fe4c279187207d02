"""Animation files from RGB frames: the caption strip every frame carries, and the GIF and MP4 encoders.

GIF goes through Pillow (installed with matplotlib); MP4 through the ffmpeg binary that the `imageio-ffmpeg` wheel
ships (the `video` extra). Encoders return bytes; the caller writes them (atomically) where it wants.
"""

from __future__ import annotations

import importlib.util
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

FORMATS = ("gif", "mp4", "html")
"""Output formats by file suffix; html is the Brax viewer (brax.io.html), the others are frame animations."""

CAPTION_HEIGHT = 14
"""Pixels of the caption strip above each frame."""


def output_format(out: Path, flag: str = "out") -> str:
    """'gif', 'mp4' or 'html' from out's suffix; ValueError naming the flag otherwise."""
    fmt = Path(out).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"{flag}={str(out)!r}: write a .gif, .mp4 (the video extra) or .html (Brax only) file")
    return fmt


def check_writer(fmt: str) -> None:
    """ValueError naming the extra when the encoder for fmt is not installed (checked before any rollout)."""
    if fmt == "mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise ValueError("writing .mp4 needs the imageio-ffmpeg package: pip install -e \".[video]\" (or write a "
                         ".gif)")


def caption(frame: np.ndarray, text: str) -> np.ndarray:
    """uint8 [H + CAPTION_HEIGHT, W, 3]: frame (uint8 [H, W, 3]) under a white strip holding text."""
    from PIL import Image, ImageDraw

    frame = np.asarray(frame, np.uint8)[..., :3]
    strip = Image.new("RGB", (frame.shape[1], CAPTION_HEIGHT), "white")
    ImageDraw.Draw(strip).text((3, 1), text, fill="black")
    return np.concatenate([np.asarray(strip), frame], axis=0)


def encode_gif(frames: Sequence[np.ndarray], fps: float) -> bytes:
    """A looping GIF of frames (uint8 [H, W, 3], all one size), fps frames per second."""
    from PIL import Image

    images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(int(round(1000 / fps)), 20))  # browsers play faster GIFs at 10 fps
    return buffer.getvalue()


def encode_mp4(frames: Sequence[np.ndarray], fps: float) -> bytes:
    """An H.264 MP4 of frames (uint8 [H, W, 3], all one size), padded to even sizes as yuv420p requires."""
    check_writer("mp4")
    import imageio_ffmpeg

    first = np.asarray(frames[0])
    height, width = first.shape[0] + first.shape[0] % 2, first.shape[1] + first.shape[1] % 2
    with tempfile.TemporaryDirectory(prefix="jaxppo-video-") as folder, warnings.catch_warnings():
        # ffmpeg is started with subprocess (fork, then exec at once): JAX's warning about forking does not apply
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        path = os.path.join(folder, "episode.mp4")
        writer = imageio_ffmpeg.write_frames(path, (width, height), fps=fps, macro_block_size=1,
                                             ffmpeg_log_level="error")
        writer.send(None)  # start the ffmpeg process
        for frame in frames:
            frame = np.asarray(frame, np.uint8)
            padded = np.zeros((height, width, 3), np.uint8)
            padded[: frame.shape[0], : frame.shape[1]] = frame[..., :3]
            writer.send(np.ascontiguousarray(padded))
        writer.close()
        return Path(path).read_bytes()


def encode(fmt: str, frames: Sequence[np.ndarray], fps: float) -> bytes:
    """encode_gif or encode_mp4 by fmt ('gif' or 'mp4')."""
    if not frames:
        raise ValueError("no frames to write")
    return encode_gif(frames, fps) if fmt == "gif" else encode_mp4(frames, fps)
