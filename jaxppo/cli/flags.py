"""Shared flag handling of the `jaxppo` commands: config flags, presets resolved before parsing, one-line errors.

    args = parse(TrainArgs, argv, "jaxppo train")   # tyro; a bad flag is UsageError with one line

Every command's arguments are a frozen dataclass; those with a `config: ConfigFlags` field get every PPOConfig field
as a flag, with a preset's values as defaults when `--preset NAME` is on the command line (flags given next to it
win).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import re
from typing import Any, Literal, TypeVar

import tyro

from jaxppo.config import PPOConfig

EXIT_USAGE = 2
EXIT_FAILED = 1

T = TypeVar("T")


class UsageError(Exception):
    """A user mistake (exit code 2) or a failed run (exit code 1), reported as one line."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


@dataclasses.dataclass(frozen=True)
class ConfigFlags(PPOConfig):
    """PPOConfig fields as flags; validated when converted (to_config), so errors are one line."""

    num_devices: int | Literal["all"] = 1
    """Local devices of each process to spread the environments over; 'all' takes every local device."""

    def __post_init__(self) -> None:  # validation happens in to_config
        pass


def to_config(flags: PPOConfig) -> PPOConfig:
    """The validated PPOConfig of parsed flags (UsageError naming the field); the env id in its registered
    spelling (--env cartpole-v1 runs and saves CartPole-v1)."""
    from jaxppo.envs import canonical_env_id

    values = {f.name: getattr(flags, f.name) for f in dataclasses.fields(PPOConfig)}
    if values["num_devices"] == "all":
        import jax

        values["num_devices"] = jax.local_device_count()
    if isinstance(values["env"], str):
        try:
            values["env"] = canonical_env_id(values["env"])
        except ValueError as error:
            raise as_flag_error(error) from None
    try:
        return PPOConfig(**values)
    except ValueError as error:
        raise UsageError(str(error)) from None


def as_flag_error(error: ValueError) -> UsageError:
    """'num_seeds=0: must be ...' (a library message naming a field) -> '--num-seeds 0: must be ...'."""
    text = str(error)
    match = re.match(r"([a-z_]+)=(.*?): (.*)", text)
    if match is None:
        return UsageError(text)
    name, value, rule = match.groups()
    return UsageError(f"--{name.replace('_', '-')} {value}: {rule}")


def preset_in(argv: list[str]) -> str | None:
    """The value of --preset in a command line (None without one); UsageError if it names no preset."""
    from jaxppo.presets import preset_values

    for index, arg in enumerate(argv):
        if arg == "--preset":
            if index + 1 >= len(argv):
                raise UsageError("--preset: give a preset name, e.g. --preset cartpole-v1 (see jaxppo train --help)")
            name = argv[index + 1]
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
        else:
            continue
        try:
            preset_values(name)
        except ValueError as error:
            raise UsageError(f"--preset {name}: {str(error).split(': ', 1)[1]}") from None
        return name
    return None


def flags_given(argv: list[str]) -> set[str]:
    """Field names of the --flags present in argv ('--num-envs 4' and '--no-anneal-lr' -> num_envs, anneal_lr)."""
    names = set()
    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            names.add(name[3:] if name.startswith("no_") else name)
    return names


_BORDER = " │|╭╮╰╯─-+="


def _one_line(box: str) -> str:
    """The message inside tyro's error box (unicode or ASCII borders), as one line."""
    lines = [line.strip(_BORDER) for line in box.splitlines()]
    message = []
    for line in lines[1:]:  # lines[0] is the box's title ("Value error", "Missing argument", ...)
        if not line:
            if message:
                break
            continue
        message.append(line)
    text = " ".join(message) or " ".join(line for line in lines if line)
    return re.sub(r"\s+", " ", text).strip()


def parse(cls: type[T], argv: list[str], prog: str, default: T | None = None, description: str | None = None) -> T:
    """tyro.cli(cls) on argv; a parse error becomes UsageError with tyro's message on one line."""
    from jaxppo.compile_cache import DISABLE_ENV, DISABLE_FLAG

    description = (f"{description or inspect.getdoc(cls) or ''}\n{DISABLE_FLAG} (or {DISABLE_ENV}=1): compile "
                   "without JAX's persistent compilation cache (on by default in ~/.cache/jaxppo/jax).")
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(cls, args=argv, prog=prog, default=default, description=description)
    except SystemExit as stop:
        if stop.code in (0, None):
            raise
        raise UsageError(f"{_one_line(captured.getvalue())} (see {prog} --help)") from None


def config_defaults(preset: str | None) -> ConfigFlags:
    """ConfigFlags holding the preset's values (or PPOConfig's defaults)."""
    from jaxppo.presets import preset_values

    return ConfigFlags(**(preset_values(preset) if preset else {}))


def parse_with_config(cls: type[T], argv: list[str], prog: str, description: str | None = None,
                      **defaults: Any) -> tuple[T, str | None]:
    """Parse a command whose arguments have a `config: ConfigFlags` field, defaults from --preset when given.
    Returns (arguments, preset name or None)."""
    preset = preset_in(argv)
    default = cls(config=config_defaults(preset), **defaults)  # type: ignore[call-arg]
    return parse(cls, argv, prog, default, description), preset
