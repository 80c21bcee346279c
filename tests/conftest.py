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

# The suite is mostly XLA:CPU compiles, and LLVM's optimisation of the generated code is most of a compile: tests
# compile with it off (about a third less CPU per compile; the programs' HLO, and so what they compute, is the same
# graph). Commands and benchmarks keep XLA's default. SORAJAX_TEST_XLA_OPT=default runs the tests as they do.
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
