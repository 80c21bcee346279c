"""Malloc tuned for XLA: the command line is read right, the environment is extended without overriding the
user, the restart happens once for `python -m sorajax.<command>` and never for a library import or an opt-out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sorajax import host_memory
from sorajax.host_memory import (
    HEAP_REUSE,
    launched_command,
    needs_restart,
    tunables_for,
    with_tunables,
    without_tunables,
)

WANTED = host_memory.wanted_tunables()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL = {**HEAP_REUSE, "glibc.malloc.hugetlb": "1"}


@pytest.mark.parametrize("argv, module", [
    (["python", "-m", "sorajax.main", "--workdir=x"], "sorajax.main"),
    (["python", "-u", "-X", "importtime", "-m", "sorajax.train_dit"], "sorajax.train_dit"),
    (["python", "-m", "sorajax"], "sorajax"),
    (["python", "-m", "pytest", "-q", "tests"], None),
    (["python", "-m", "sorajaxx.main"], None),
    (["python", "benchmarks/wan_speed.py", "-m", "sorajax.main"], None),
    (["python", "-c", "import sorajax", "-m", "sorajax.main"], None),
    (["python"], None),
])
def test_launched_command(argv, module):
    assert launched_command(argv) == module


def test_tunables_follow_glibc_and_the_kernel():
    assert tunables_for(None, True) == {}  # not glibc: nothing
    assert tunables_for((2, 17), True) == {}  # before glibc had tunables
    assert tunables_for((2, 31), True) == HEAP_REUSE  # before glibc.malloc.hugetlb
    assert tunables_for((2, 36), False) == HEAP_REUSE  # transparent huge pages off
    assert tunables_for((2, 36), True) == ALL
    assert HEAP_REUSE == {"glibc.malloc.mmap_max": "0", "glibc.malloc.trim_threshold": "4294967295",
                          "glibc.malloc.arena_max": "1"}


def test_environment_gets_the_tunables_and_keeps_the_users():
    env = with_tunables({"HOME": "/h"}, {"glibc.malloc.hugetlb": "1", "glibc.malloc.mmap_max": "0"})
    assert env == {"HOME": "/h", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1:glibc.malloc.mmap_max=0"}
    mine = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0:glibc.malloc.tcache_count=0"}
    assert with_tunables(mine, {"glibc.malloc.hugetlb": "1", "glibc.malloc.mmap_max": "0"}) == \
        {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0:glibc.malloc.tcache_count=0:glibc.malloc.mmap_max=0"}
    assert without_tunables(with_tunables(mine, ALL), ALL) == {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}
    assert without_tunables(with_tunables({"A": "1"}, ALL), ALL) == {"A": "1"}


def test_restart_only_when_something_is_missing_and_not_opted_out():
    assert needs_restart({}, ALL)
    assert not needs_restart(with_tunables({}, ALL), ALL)  # the restarted process: no loop
    assert not needs_restart({}, {})  # off glibc
    for off in ("0", "off", "false"):
        assert not needs_restart({"SORAJAX_MALLOC_TUNING": off}, ALL)


def test_kernel_switch(tmp_path):
    switch = tmp_path / "enabled"
    switch.write_text("always [madvise] never\n")
    assert host_memory.kernel_allows_huge_pages(str(switch))
    switch.write_text("always madvise [never]\n")
    assert not host_memory.kernel_allows_huge_pages(str(switch))
    assert not host_memory.kernel_allows_huge_pages(str(tmp_path / "missing"))


def _clean_env(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "SORAJAX_MALLOC_TUNING")}
    return {**clean, **env}


def _memory_line(**env: str) -> str:
    """The second line `python -m sorajax` prints: the malloc tunables this process runs with."""
    result = subprocess.run([sys.executable, "-m", "sorajax"], cwd=REPO, env=_clean_env(**env),
                            capture_output=True, text=True, check=True, timeout=60)
    assert result.stderr == ""
    return result.stdout.splitlines()[1]


@pytest.mark.skipif(not WANTED, reason="needs Linux with glibc")
def test_a_command_restarts_once_with_the_tunables():
    expected = ":".join(f"{k}={v}" for k, v in WANTED.items())
    assert _memory_line() == f"malloc tuned for XLA: GLIBC_TUNABLES={expected}"
    # the user's own value stays
    kept = _memory_line(GLIBC_TUNABLES="glibc.malloc.arena_max=4")
    assert kept.startswith("malloc tuned for XLA: GLIBC_TUNABLES=glibc.malloc.arena_max=4:")
    assert "glibc.malloc.arena_max=1" not in kept and "glibc.malloc.mmap_max=0" in kept
    # a real command's flags survive the restart: an unknown flag is still refused by name, exit 2
    refused = subprocess.run([sys.executable, "-m", "sorajax.probe", "--no_such_flag=1"], cwd=REPO, env=_clean_env(),
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "no_such_flag" in refused.stderr


def test_opted_out_and_library_imports_stay_as_they_are():
    assert _memory_line(SORAJAX_MALLOC_TUNING="0") == "malloc tuned for XLA: no (SORAJAX_MALLOC_TUNING=0)"
    code = "import os, sorajax; print(os.environ.get('GLIBC_TUNABLES'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_clean_env(), capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "None"
