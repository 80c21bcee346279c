"""The host allocator set for XLA:CPU: a sorajax command re-executes itself once with glibc malloc tunables.

Why: XLA:CPU takes every large buffer of a step (activations, attention logits, gradients) from malloc.
glibc serves a request above 32 MB (and any large one from a worker thread's arena) with a fresh
``mmap``, unmapped again when freed, so every step faults its whole working set in again through new,
kernel-zeroed 4 KB pages: ~67,000 minor faults and 0.14 CPU s of kernel time per step of the main job's
tiny DiT, ~550,000 per Wan-sized train step; the main job spent 19% of its CPU time in the kernel. So:

- ``glibc.malloc.mmap_max=0``, ``glibc.malloc.trim_threshold=<max>``, ``glibc.malloc.arena_max=1``: large
  buffers come from the one main heap and stay mapped when freed, so the next step reuses them (the
  process keeps its peak heap instead of returning it between steps);
- ``glibc.malloc.hugetlb=1`` (glibc >= 2.35, transparent huge pages not ``never``): 2 MB pages for the
  heap, so growing it takes ~500x fewer faults.

docs/results.md has the measured effect. A glibc tunable is read once, when the process starts, so the
only way to set one for ``python -m sorajax.<command>`` is to start the command again with it in the
environment, before anything heavy is imported. Tunables the user set already are left as they are.
``SORAJAX_MALLOC_TUNING=0`` turns this off; off glibc (macOS, musl) nothing happens.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence

HUGE_PAGES = "glibc.malloc.hugetlb"
HEAP_REUSE = {"glibc.malloc.mmap_max": "0", "glibc.malloc.trim_threshold": str(2**32 - 1),
              "glibc.malloc.arena_max": "1"}
OPT_OUT = "SORAJAX_MALLOC_TUNING"
THP_SWITCH = "/sys/kernel/mm/transparent_hugepage/enabled"
MIN_GLIBC, MIN_GLIBC_HUGE_PAGES = (2, 26), (2, 35)  # tunables; glibc.malloc.hugetlb
_OPTIONS_WITH_VALUE = ("-X", "-W", "--check-hash-based-pycs")


def glibc_version() -> tuple[int, ...] | None:
    """(major, minor) of the C library on Linux with glibc, else None."""
    if not sys.platform.startswith("linux"):
        return None
    library, version = platform.libc_ver()
    if library != "glibc" or not version:
        return None
    try:
        return tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return None


def kernel_allows_huge_pages(switch: str = THP_SWITCH) -> bool:
    """True unless the kernel's transparent huge pages are off (``[never]``) or absent."""
    try:
        with open(switch) as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def tunables_for(version: tuple[int, ...] | None, huge_pages_allowed: bool) -> dict[str, str]:
    """The tunables worth setting under this glibc and kernel (none off glibc)."""
    if version is None or version < MIN_GLIBC:
        return {}
    huge = {HUGE_PAGES: "1"} if version >= MIN_GLIBC_HUGE_PAGES and huge_pages_allowed else {}
    return {**HEAP_REUSE, **huge}


def wanted_tunables() -> dict[str, str]:
    return tunables_for(glibc_version(), kernel_allows_huge_pages())


def _parse(value: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in value.split(":") if "=" in item)


def with_tunables(environ: Mapping[str, str], tunables: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with ``tunables`` appended to ``GLIBC_TUNABLES``; the ones it sets already keep their value."""
    current = environ.get("GLIBC_TUNABLES", "")
    missing = [f"{k}={v}" for k, v in tunables.items() if k not in _parse(current)]
    if not missing:
        return dict(environ)
    return {**environ, "GLIBC_TUNABLES": ":".join(([current] if current else []) + missing)}


def without_tunables(environ: Mapping[str, str], tunables: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with these tunables taken out (a process that should run with glibc's defaults)."""
    kept = [item for item in environ.get("GLIBC_TUNABLES", "").split(":") if item and item.split("=", 1)[0]
            not in tunables]
    env = {k: v for k, v in environ.items() if k != "GLIBC_TUNABLES"}
    return {**env, "GLIBC_TUNABLES": ":".join(kept)} if kept else env


def opted_out(environ: Mapping[str, str]) -> bool:
    return environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off")


def needs_restart(environ: Mapping[str, str], tunables: Mapping[str, str]) -> bool:
    """True when some wanted tunable is missing and the user has not opted out."""
    return not opted_out(environ) and with_tunables(environ, tunables) != dict(environ)


def launched_command(orig_argv: Sequence[str]) -> str | None:
    """The module of ``python [options] -m sorajax.<command> ...``, else None."""
    args, index = list(orig_argv[1:]), 0
    while index < len(args):
        arg = args[index]
        if arg == "-m" and index + 1 < len(args):
            module = args[index + 1]
            return module if module == "sorajax" or module.startswith("sorajax.") else None
        if arg == "-c" or not arg.startswith("-"):
            return None  # a script or -c code runs, not a module
        index += 2 if arg in _OPTIONS_WITH_VALUE else 1
    return None


def reexec_with_tunables(orig_argv: Sequence[str] | None = None) -> None:
    """Start this process's command again, in place (same pid), with the tunables set; a no-op where unwanted.

    Call it first thing, before JAX is imported: everything done before is done twice.
    """
    tunables = wanted_tunables()
    if not sys.executable or not needs_restart(os.environ, tunables):
        return
    argv = list(sys.orig_argv if orig_argv is None else orig_argv)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], with_tunables(os.environ, tunables))
    except OSError:
        pass  # could not start again (an odd interpreter path): run on with glibc's defaults, only slower


def reexec_command_with_tunables() -> None:
    """:func:`reexec_with_tunables` when this process is ``python -m sorajax.<command>`` (not a library import)."""
    if launched_command(sys.orig_argv) is not None:
        reexec_with_tunables()


def describe() -> str:
    """One line: the malloc tunables this process runs with, and why (not) sorajax's."""
    wanted = wanted_tunables()
    current = _parse(os.environ.get("GLIBC_TUNABLES", ""))
    ours = {k: current[k] for k in wanted if k in current}
    if wanted and len(ours) == len(wanted):
        return f"malloc tuned for XLA: GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']}"
    if opted_out(os.environ):
        return f"malloc tuned for XLA: no ({OPT_OUT}={os.environ[OPT_OUT]})"
    if not wanted:
        return f"malloc tuned for XLA: no (needs Linux with glibc >= 2.26; this is {platform.libc_ver()})"
    return "malloc tuned for XLA: no (a library import: only `python -m sorajax.<command>` restarts with it)"
