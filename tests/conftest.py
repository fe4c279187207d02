"""Test session setup (before jax is imported): fake CPU devices for the collective tests, quick compilation, and a
compilation cache for the session.

Quick compilation: JAX's own switch for test suites, JAX_DISABLE_MOST_OPTIMIZATIONS=1 (XLA backend optimisation
level 0, LLVM's expensive passes off). The tiny programs of the tests compile about 1.6x faster (a 4 x 16 CartPole
training program: 1.8 s instead of 2.9 s on this project's quiet 2-core box) and run about as fast; every program
computes the same functions, and bitwise comparisons between programs of the session hold as with the defaults.
Tests whose time is spent running long trainings ask for the optimised build (the `optimized_compile` fixture);
JAXPPO_TEST_XLA_DEFAULTS=1 keeps JAX's defaults (what users run) for a whole session.

Eight fake devices, of which the tests use at most four (devices to spare, as the README advises for vmapped
programs with collectives on fake CPU devices). The persistent compilation cache lives in a fresh temporary folder
for this session only (subprocesses started by tests and pytest-xdist workers inherit it): many tests compile the
same tiny programs, and XLA then compiles each once.
"""

import atexit
import os
import shutil
import tempfile
import time

if "JAXPPO_TEST_SESSION" not in os.environ:  # once per session: pytest-xdist workers inherit this set-up
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if os.environ.get("JAXPPO_TEST_XLA_DEFAULTS") != "1":
        os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"  # see the module docstring; child processes inherit it
    _CACHE = tempfile.mkdtemp(prefix="jaxppo-test-compilation-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.3"
    os.environ["JAXPPO_TEST_SESSION"] = str(os.getpid())
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ smoke subset
import pytest  # noqa: E402 - after the environment set-up above, which must run before anything imports jax

SMOKE = (
    # `pytest -m smoke`: a quick subset (about 2 minutes on 2 quiet cores) in which every module of jaxppo/ runs.
    # Listed here rather than marked in each file: one place to read and change it. A name that no longer exists
    # is an error when its file is collected whole.
    "test_advantages.py::test_matches_lambda_return_of_each_episode",
    "test_losses.py::test_ppo_loss_matches_numpy",
    "test_distributions.py::test_categorical_log_prob_entropy_mode",
    "test_distributions.py::test_gaussian_hand_worked_log_prob",
    "test_networks.py::test_actor_and_critic_share_no_parameters",
    "test_memory.py::test_gru_carry_is_reset_exactly_where_first_is_set",
    "test_normalizers.py::test_running_moments_match_numpy_over_several_batches",
    "test_episodes.py::test_episode_tally_and_carried_means",
    "test_collectives.py::test_combined_moments_equal_numpy_over_the_union",
    "test_random_words.py::test_other_prng_implementations_fall_back_to_jax_random",
    "test_rollout.py::test_shapes_and_first_flags",
    "test_update.py::test_apply_gradient_equals_optax_clip_adam_lr",
    "test_config.py::test_invalid_config_names_field_and_value",
    "test_config.py::test_derived_counts_and_rounding_note",
    "test_envs.py::test_step_keeps_final_observation_apart_from_reset_observation",
    "test_envs.py::test_missing_suite_is_one_line_naming_the_install_command",
    "test_env_suites.py::test_ids_resolve_case_insensitively_and_unknown_ones_name_close_matches",  # every adapter
    "test_env_ids.py::test_ids_resolve_to_the_registered_spelling",
    "test_env_ids.py::test_a_suite_prefix_in_any_case_builds_that_suite",
    "test_evaluate.py::test_evaluate_time_limit_episode_returns_and_lengths",
    "test_checkpoint.py::test_corrupt_checkpoint_is_refused_and_left_untouched",  # train -> checkpoint -> resume
    "test_command_output.py::test_eval_prints_what_it_does_the_compile_seconds_then_the_results",  # train, eval
    "test_command_output.py::test_python_dash_m_runs_the_console_script",
    "test_sweep.py::test_random_settings_respect_ranges_and_log_scale",
    "test_cli_tools.py::test_parsers",
    "test_plotting.py::test_plot_command_band_option_sets_the_drawn_line_and_band",
    "test_metric_names.py::test_the_docs_table_names_every_column_and_plot_takes_every_name_it_shows",
    "test_loggers.py::test_tensorboard_event_files_hold_the_exact_scalars_and_steps",
    "test_progress.py::test_lines_wait_for_every_seed_and_show_their_mean",
    "test_presets.py::test_every_preset_builds_a_valid_config",
    "test_distributed.py::test_more_devices_than_exist_is_a_clear_error",
    "test_outputs.py::test_metrics_csv_round_trip_with_nan_placeholders",
    "test_compile_cache.py::test_the_command_line_turns_the_cache_on_or_off",
    "test_imports.py::test_no_import_cycle_in_the_package",
    "test_docs.py::test_every_relative_link_of_the_readme_and_the_docs_resolves",
    "test_schedules.py::test_hand_worked_cosine_with_warm_up",
    "test_pbt.py::test_fitness_is_the_windowed_mean_ignoring_updates_without_episodes",
    "test_pbt.py::test_explore_perturbs_or_resamples_inside_the_range_and_only_the_replaced",
)


@pytest.hookimpl(tryfirst=True)  # before `-m smoke` deselects anything
def pytest_collection_modifyitems(config, items):
    """Mark the SMOKE tests `smoke` (every parametrisation); a SMOKE name missing from a file collected whole is an
    error naming it."""
    wanted = {tuple(name.split("::")) for name in SMOKE}
    found = set()
    for item in items:
        key = (item.path.name, item.originalname)
        if key in wanted:
            item.add_marker(pytest.mark.smoke)
            found.add(key)
    if any("::" in arg for arg in config.args) or config.getoption("keyword"):
        return  # only some tests of a file were asked for
    collected_files = {item.path.name for item in items}
    missing = sorted(f"{f}::{name}" for f, name in wanted - found if f in collected_files)
    if missing:
        raise pytest.UsageError(f"tests/conftest.py SMOKE names tests that do not exist: {', '.join(missing)}")


@pytest.fixture
def optimized_compile():
    """Compile with XLA's full optimisation inside the test (long trainings: run time dominates, not compile)."""
    import jax

    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


# ------------------------------------------------------------------------------------ per-file progress (xdist)
class FileProgress:
    """Under pytest-xdist (`-n 3`), whose progress is dots only: one line per test file once all its tests have run
    ('tests/test_cli.py: 14 passed in 47.8s'), so a long run shows where it is. Runs in the controlling process."""

    def __init__(self, terminal):
        self.terminal = terminal
        self.totals: dict[str, int] = {}
        self.finished: dict[str, int] = {}
        self.outcomes: dict[str, dict[str, int]] = {}
        self.started: dict[str, float] = {}

    def pytest_xdist_node_collection_finished(self, node, ids):
        if not self.totals:  # every worker collects the same tests
            for nodeid in ids:
                path = nodeid.split("::")[0]
                self.totals[path] = self.totals.get(path, 0) + 1

    def pytest_runtest_logreport(self, report):
        path = report.nodeid.split("::")[0]
        self.started.setdefault(path, time.monotonic())
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
            counts = self.outcomes.setdefault(path, {})
            counts[outcome] = counts.get(outcome, 0) + 1
        if report.when == "teardown":
            self.finished[path] = self.finished.get(path, 0) + 1
            if self.finished[path] == self.totals.get(path):
                counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.outcomes.get(path, {}).items()))
                # on a line of its own, after the dots xdist writes without telling the reporter
                self.terminal.write(f"\n{path}: {counts} in {time.monotonic() - self.started[path]:.1f}s\n")


@pytest.hookimpl(trylast=True)  # after the terminal reporter is registered
def pytest_configure(config):
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput") and terminal is not None:
        config.pluginmanager.register(FileProgress(terminal), "jaxppo-file-progress")
