"""Test session setup: a shared on-disk compilation cache, so identical programs compile once.

Trainer tests run the same tiny step in several runs (straight, interrupted,
resumed); each builds new closures, which `jax.jit` alone would compile anew.
"""

import os
import tempfile

import jax

from sorajax.host_memory import opted_out, wanted_tunables, with_tunables

_CACHE_DIR = os.environ.get("SORAJAX_TEST_COMPILE_CACHE", os.path.join(tempfile.gettempdir(), "sorajax_test_jax_cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# The suite is mostly XLA:CPU compiles, and LLVM's optimisation of the generated code is much of a compile: tests
# compile with it off (~30% less CPU on the sharded autoencoder's cases). The programs' HLO is the same; the less
# optimised machine code may round floats differently (1e-6 seen). Commands and benchmarks keep XLA's default;
# SORAJAX_TEST_XLA_OPT=default runs the tests with it too.
# Set in the environment before any backend starts, so xdist's workers and every subprocess inherit it.
_FAST_COMPILE = "--xla_backend_optimization_level=0"
if os.environ.get("SORAJAX_TEST_XLA_OPT", "fast") != "default" and _FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

# xdist's workers start after this file is read: they run with malloc tuned for XLA, as the commands do
# (sorajax.host_memory: large buffers reused between steps, not faulted in anew).
if not opted_out(os.environ):
    os.environ.update(with_tunables(os.environ, wanted_tunables()))  # the user's own values are kept


def pytest_terminal_summary(terminalreporter):
    """Lines a test recorded as `record_property("log_line", ...)`, printed in the summary (e.g. each notebook
    executed), so the CI log shows them even when the tests ran on xdist workers."""
    lines = [value for report in terminalreporter.stats.get("passed", [])
             for key, value in getattr(report, "user_properties", []) if key == "log_line"]
    if lines:
        terminalreporter.section("recorded")
        for line in lines:
            terminalreporter.write_line(line)


# The slowest files (20 s or more each in `pytest --durations`), longest first. xdist hands whole files to the
# workers in collection order (pytest.ini turns off its own ordering, by test count, which put the one-test
# subprocess files last), so these start first and the two workers never end with one long file left on one.
SLOW_FIRST = ("test_notebooks.py", "test_train_dit.py", "test_parallel_vae.py", "test_gpu_check.py",
              "test_train_vae.py", "test_sweep.py", "test_wan_finetune.py", "test_lora.py", "test_parallel_steps.py",
              "test_data_tfds.py", "test_bad_input.py", "test_warm_start.py", "test_parallel_model_options.py",
              "test_aot_compile.py", "test_run_loading.py", "test_lora_sharded.py", "test_vae_tiled_codec.py",
              "test_condition_slots.py", "test_wan_vae.py", "test_dit.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order is kept
