"""JAX's persistent compilation cache behind the `jaxppo` commands: on by default in a per-user folder, so a second
process loads what the first compiled; --no-compile-cache / JAXPPO_NO_COMPILE_CACHE turn it off; the library alone
leaves JAX's setting as it is."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jaxppo import cli, compile_cache
from tests import helpers

HIT = re.compile(r"Persistent compilation cache hit for '[^']*' with key '([^']+)'")


@pytest.fixture
def jax_cache_settings():
    """Put JAX's cache settings back after a test that calls configure() in this process."""
    saved = (jax.config.jax_enable_compilation_cache, jax.config.jax_compilation_cache_dir)
    yield
    jax.config.update("jax_enable_compilation_cache", saved[0])
    jax.config.update("jax_compilation_cache_dir", saved[1])


def _train(out: Path, xdg: Path) -> subprocess.CompletedProcess:
    # Not --quiet: progress lines are printed between chunks, not from a host callback inside the training program
    # (JAX never caches a program with host callbacks). JAX_LOG_COMPILES logs every persistent-cache hit.
    env = helpers.subprocess_env(XDG_CACHE_HOME=str(xdg), JAX_LOG_COMPILES="1")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the suite's own cache would win over the per-user folder
    env.pop(compile_cache.DISABLE_ENV, None)
    flags = [flag for flag in helpers.TINY_FLAGS if flag != "--quiet"]
    argv = [sys.executable, "-m", "jaxppo.cli", "train", *flags, "--total-timesteps", "128",
            "--out", str(out)]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_second_process_loads_every_program_the_first_one_wrote(tmp_path):
    xdg = tmp_path / "xdg"
    first = _train(tmp_path / "a", xdg)
    folder = xdg / "jaxppo" / "jax"
    written = {p.name[: -len("-cache")] for p in folder.glob("*-cache")}
    assert written, f"the first process wrote nothing to {folder}"
    assert not HIT.findall(first.stderr)  # a fresh folder: nothing to load
    second = _train(tmp_path / "b", xdg)
    assert written <= set(HIT.findall(second.stderr)), second.stderr[-3000:]
    assert "(from the compilation cache)" in second.stdout and "(from the compilation cache)" not in first.stdout


def test_the_command_line_turns_the_cache_on_or_off(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "configure_compile_cache", lambda disabled: calls.append(disabled))
    assert cli.main(["plot"]) == 2  # configured before the command runs (here: a usage error, no run given)
    assert cli.main(["plot", compile_cache.DISABLE_FLAG]) == 2
    assert cli.main([compile_cache.DISABLE_FLAG, "plot"]) == 2
    assert calls == [False, True, True]
    errors = capsys.readouterr().err.splitlines()
    assert all("give at least one run folder" in line for line in errors), errors  # the flag never reaches plot


@pytest.mark.parametrize("value, disabled", [("1", True), ("true", True), ("yes", True), ("0", False),
                                             ("", False), ("off", False)])
def test_the_environment_variable(value, disabled):
    assert compile_cache.disabled_by_env({compile_cache.DISABLE_ENV: value}) is disabled
    assert compile_cache.disabled_by_env({}) is False


def test_configure_sets_jax_and_respects_its_own_setting(tmp_path, jax_cache_settings):
    assert compile_cache.configure(disabled=True) is None
    assert jax.config.jax_enable_compilation_cache is False
    assert compile_cache.configure(environ={compile_cache.DISABLE_ENV: "1"}) is None
    assert jax.config.jax_enable_compilation_cache is False

    jax.config.update("jax_compilation_cache_dir", None)
    assert compile_cache.configure(environ={"XDG_CACHE_HOME": str(tmp_path)}) is None  # JAX's own switch is off
    assert jax.config.jax_compilation_cache_dir is None and not (tmp_path / "jaxppo").exists()

    jax.config.update("jax_enable_compilation_cache", True)
    folder = compile_cache.configure(environ={"XDG_CACHE_HOME": str(tmp_path)})
    assert folder == tmp_path / "jaxppo" / "jax" and folder.is_dir()
    assert jax.config.jax_enable_compilation_cache is True
    assert jax.config.jax_compilation_cache_dir == str(folder)

    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))  # JAX_COMPILATION_CACHE_DIR, say
    assert compile_cache.configure(environ={"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "mine"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")


def test_default_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(Path, "home", lambda: tmp_path / "home")
    assert compile_cache.default_dir({}) == tmp_path / "home" / ".cache" / "jaxppo" / "jax"
    assert compile_cache.default_dir({"XDG_CACHE_HOME": "/x/cache"}) == Path("/x/cache/jaxppo/jax")
    assert compile_cache.default_dir({"XDG_CACHE_HOME": "relative"}) == tmp_path / "home" / ".cache" / "jaxppo" / "jax"


def test_count_hits_counts_only_cache_hit_events():
    with compile_cache.count_hits() as hits:
        jax.monitoring.record_event("/jax/compilation_cache/cache_hits")
        jax.monitoring.record_event("/jax/compilation_cache/compile_requests_use_cache")
    jax.monitoring.record_event("/jax/compilation_cache/cache_hits")  # after the block: not counted
    assert hits.count == 1
