"""Every notebook in colab/ runs top to bottom on the smoke budget, and is committed without outputs.

The quickstart runs first: its main job trains the smoke run under SORAJAX_NOTEBOOK_RUNS, which
prompting and your_videos then sample from (one training for all). scaling and wan need no run and
execute on a second thread meanwhile. Kernels share the tests' compilation cache, so programs another
notebook (or an earlier CI run) compiled load instead of compiling.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import nbclient
import nbformat
import pytest

from tools.strip_notebooks import outputs_left

REPO = Path(__file__).resolve().parents[1]
COLAB = REPO / "colab"
ORDER = ("quickstart", "prompting", "your_videos", "scaling", "wan")  # the quickstart trains the shared run
INDEPENDENT = ("scaling", "wan")  # these two sample no trained run


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    cache = os.environ.get("SORAJAX_TEST_COMPILE_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                                      "sorajax_test_jax_cache"))
    return dict(os.environ, SORAJAX_NOTEBOOK_BUDGET="smoke", SORAJAX_NOTEBOOK_RUNS=str(tmp_path_factory.mktemp("runs")),
                PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", TF_CPP_MIN_LOG_LEVEL="2")


class Outcome(NamedTuple):
    error: str | None  # the failing cell's source and traceback
    code_cells: int
    seconds: float


def execute(name: str, env: dict[str, str], book: nbformat.NotebookNode | None = None) -> Outcome:
    """Runs colab/<name>.ipynb (or `book`) in a fresh kernel, its working directory colab/ as Jupyter opens it."""
    book = book or nbformat.read(COLAB / f"{name}.ipynb", as_version=4)
    # The per-cell timeout only catches a hung kernel: the quickstart's training cell takes ~40 s of CPU with a warm
    # compilation cache, ~2 min cold, and several times that on a machine shared with other jobs.
    client = nbclient.NotebookClient(book, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(COLAB)}})
    start, error = time.perf_counter(), None
    try:
        client.execute(env=env)
    except (nbclient.exceptions.CellExecutionError, nbclient.exceptions.CellTimeoutError) as failure:
        error = re.sub(r"\x1b\[[0-9;]*m", "", str(failure))  # IPython colours the traceback
    return Outcome(error, sum(cell.cell_type == "code" for cell in book.cells), time.perf_counter() - start)


@pytest.fixture(scope="module")
def alongside(kernel_env):
    """The notebooks that need no trained run execute on a second thread while the quickstart trains (2 cores)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield {name: pool.submit(execute, name, kernel_env) for name in INDEPENDENT}


def test_every_notebook_is_listed():
    assert sorted(p.stem for p in COLAB.glob("*.ipynb")) == sorted(ORDER)


@pytest.mark.parametrize("name", ORDER)
def test_notebook_runs_top_to_bottom_on_the_smoke_budget(name, kernel_env, alongside, record_property):
    outcome = alongside[name].result() if name in alongside else execute(name, kernel_env)
    if outcome.error is not None:
        pytest.fail(f"colab/{name}.ipynb: a cell raised\n{outcome.error}", pytrace=False)
    # Shown in the CI log by conftest's terminal summary (xdist workers' own output never reaches it).
    record_property("log_line", f"notebook colab/{name}.ipynb executed: {outcome.code_cells} code cells in "
                    f"{outcome.seconds:.1f} s" + (" (alongside the quickstart)" if name in alongside else ""))


@pytest.mark.parametrize("name", ORDER)
def test_notebook_is_committed_without_outputs(name):
    book = nbformat.read(COLAB / f"{name}.ipynb", as_version=4)
    assert outputs_left(book) == [], f"colab/{name}.ipynb has outputs: run python tools/strip_notebooks.py"
    nbformat.validate(book)
    assert [c.metadata.get("tags") for c in book.cells if c.metadata.get("tags")] == [["parameters"]]


def test_a_raising_cell_is_reported_with_its_source_and_error():
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                           nbformat.v4.new_code_cell("raise ValueError('the size must be a multiple of 16')")])
    outcome = execute("made-up", dict(os.environ), book)
    assert outcome.code_cells == 2
    assert "raise ValueError('the size must be a multiple of 16')" in outcome.error
    assert "ValueError: the size must be a multiple of 16" in outcome.error


def _cell_source(name: str, index: int) -> str:
    return nbformat.read(COLAB / f"{name}.ipynb", as_version=4).cells[index].source


def test_outside_a_checkout_the_placeholder_url_stops_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not inside a checkout, nothing to clone from
    cells = _cell_source("quickstart", 1) + "\n" + _cell_source("quickstart", 2)
    with pytest.raises(RuntimeError, match=r"^this notebook is not inside a sorajax checkout: set REPO_URL") as error:
        exec(compile(cells, "install", "exec"), {})
    assert "\n" not in str(error.value)
    assert not any(tmp_path.iterdir())  # nothing cloned or written


def test_the_budget_comes_from_the_environment_and_is_checked(monkeypatch):
    from sorajax import notebook

    monkeypatch.delenv(notebook.BUDGET_ENV, raising=False)
    assert notebook.chosen_budget("demo") == "demo"
    monkeypatch.setenv(notebook.BUDGET_ENV, "smoke")
    assert notebook.chosen_budget("demo") == "smoke"
    monkeypatch.setenv(notebook.BUDGET_ENV, "tiny")
    with pytest.raises(ValueError, match="unknown budget 'tiny': set BUDGET .* smoke, demo, full"):
        notebook.chosen_budget("demo")
    assert set(notebook.MAIN_JOB_FLAGS) == set(notebook.BUDGETS)


def test_a_failing_command_raises_naming_it(capsys):
    import sys

    from sorajax import notebook

    notebook.run_command([sys.executable, "-c", "print('hello')"])
    assert capsys.readouterr().out == "hello\n"
    with pytest.raises(RuntimeError, match=r"-c raise SystemExit\(3\) failed with exit code 3"):
        notebook.run_command([sys.executable, "-c", "raise SystemExit(3)"])


def test_strip_tool_removes_outputs_and_counts(tmp_path):
    from tools.strip_notebooks import main as strip_main

    book = nbformat.read(COLAB / "wan.ipynb", as_version=4)
    cell = next(c for c in book.cells if c.cell_type == "code")
    cell.execution_count = 3
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01"}
    path = tmp_path / "run.ipynb"
    nbformat.write(book, path)
    assert strip_main(["--check", str(path)]) == 1
    assert strip_main([str(path)]) == 0
    stripped = nbformat.read(path, as_version=4)
    assert outputs_left(stripped) == [] and strip_main(["--check", str(path)]) == 0
    assert [c.source for c in stripped.cells] == [c.source for c in book.cells]


@pytest.mark.parametrize("budget", ["demo", "full"])
def test_the_main_job_flags_of_the_budgets_ci_does_not_run_make_valid_configs(budget):
    from sorajax import notebook
    from sorajax.config_loading import load_config
    from sorajax.train.dit_trainer import DiTRunConfig
    from sorajax.train.vae_trainer import VAERunConfig

    overrides = {"vae_config": {}, "dit_config": {}}
    for flag in notebook.MAIN_JOB_FLAGS[budget]:
        key, _, value = flag.removeprefix("--").partition("=")
        name, _, field = key.partition(".")
        if name in overrides:
            overrides[name][field] = value
    vae = VAERunConfig.from_config(load_config("configs/vae_tiny.py", overrides["vae_config"]))
    dit = DiTRunConfig.from_config(load_config("configs/dit_tiny.py", overrides["dit_config"]))
    if budget == "demo":  # a few minutes: a quarter of the main job's steps or fewer
        assert vae.train.steps <= 200 and dit.train.steps <= 500
        assert vae.eval.every <= vae.train.steps and dit.train.save_every <= dit.train.steps
