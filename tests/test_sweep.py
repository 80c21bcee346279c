"""Sweeps end to end: members trained as subprocesses, one interrupted and resumed, finished ones skipped;
`--print`; bad members refused before anything trains; `compare`'s table and plots.

The 3-member sweep trains the autoencoder's smoke variant (members differ in seed only, so all share one
compiled program through the tests' compilation cache) and is shared by the tests through a fixture.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from sorajax import compare, sweep
from sorajax.eval.run_table import against_setting, read_run
from sorajax.runs.metrics import read_metrics
from sorajax.sweeps.members import grid, load_sweep, member_names, zipped
from sorajax.sweeps.plan import plan_sweep
from sorajax.video_io import read_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 16  # member 2 is stopped as its first step is logged: the rest of its steps are the margin
VAE_SWEEP = f'''
from sorajax.sweeps import zipped
CONFIG = "configs/vae_tiny.py:smoke"
SHARED = {{"train.steps": {STEPS}, "train.log_every": 1, "train.save_every": 8, "eval.every": {STEPS},
          "data.sizes": ((5, 16, 16),)}}  # one clip size: one compiled step for every member
MEMBERS = zipped({{"seed": [0, 1, 2]}})
'''


def _env():
    """Members compile through the tests' on-disk cache (tests/conftest.py), so only the first compiles."""
    cache = os.environ.get("SORAJAX_TEST_COMPILE_CACHE", os.path.join(tempfile.gettempdir(), "sorajax_test_jax_cache"))
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0", "PYTHONPATH": REPO}


def _sweep_command(sweep_file, workdir, *extra):
    return [sys.executable, "-m", "sorajax.sweep", f"--sweep={sweep_file}", f"--workdir={workdir}", *extra]


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def interrupted_and_resumed(tmp_path_factory):
    """Invocation 1 is stopped (SIGTERM, as a scheduler's preemption) while member 2 trains; invocation 2 finishes
    the sweep two members at a time."""
    root = tmp_path_factory.mktemp("sweep")
    sweep_file, workdir = _write(root / "seeds.py", VAE_SWEEP), root / "runs"
    first = subprocess.Popen(_sweep_command(sweep_file, workdir), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    second_member = workdir / "seed=1" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (second_member.exists() and second_member.read_text().strip()) and first.poll() is None:
        assert time.time() < deadline, "member 2 never started"
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    first_out, _ = first.communicate(timeout=120)
    manifest_after_first = json.loads((workdir / "sweep.json").read_text())
    finished_metrics = (workdir / "seed=0" / "metrics.jsonl").read_bytes()
    second = subprocess.run(_sweep_command(sweep_file, workdir, "--parallel=2"), cwd=REPO, env=_env(), capture_output=True, text=True,
                            timeout=300)
    return dict(workdir=workdir, first=(first.returncode, first_out), manifest_after_first=manifest_after_first,
                finished_metrics=finished_metrics, second=(second.returncode, second.stdout + second.stderr))


def test_an_interrupted_sweep_resumes_its_member_and_skips_the_finished_one(interrupted_and_resumed):
    runs = interrupted_and_resumed["workdir"]
    code, out = interrupted_and_resumed["first"]
    assert code == 130, out
    assert "[1/3] seed=0: done in" in out and "[2/3] seed=1: interrupted at step" in out, out
    statuses = [m["status"] for m in interrupted_and_resumed["manifest_after_first"]["members"]]
    assert statuses == ["done", "interrupted", "pending"]
    stopped_at = int(out.split("[2/3] seed=1: interrupted at step ")[1].split()[0])
    assert 1 <= stopped_at < STEPS

    code, out = interrupted_and_resumed["second"]
    assert code == 0, out
    assert "[1/3] seed=0: finished earlier, skipped" in out
    assert "[2/3] seed=1: resuming" in out and "[3/3] seed=2: training" in out, out
    assert (runs / "seed=0" / "metrics.jsonl").read_bytes() == interrupted_and_resumed["finished_metrics"]  # not retrained
    assert f"resumed autoencoder from step {stopped_at}" in (runs / "seed=1" / "sweep.log").read_text()
    for name in ("seed=0", "seed=1", "seed=2"):
        losses = [r["step"] for r in read_metrics(runs / name) if "loss" in r]
        assert sorted(set(losses)) == list(range(1, STEPS + 1)), name
        assert json.loads((runs / name / "sweep_member.json").read_text())["steps"] == STEPS
        assert json.loads((runs / name / "config.json").read_text())["seed"] == int(name[-1])
    manifest = json.loads((runs / "sweep.json").read_text())
    assert [(m["name"], m["status"]) for m in manifest["members"]] == [("seed=0", "done"), ("seed=1", "done"),
                                                                         ("seed=2", "done")]


def test_compare_tabulates_a_sweep_folder_and_draws_its_curves(interrupted_and_resumed, capsys):
    runs = interrupted_and_resumed["workdir"]
    compare.main([str(runs)])
    out_dir = runs / "comparison"
    with open(out_dir / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["seed=0", "seed=1", "seed=2"]
    assert list(rows[0])[:3] == ["run", "seed", "steps"]  # only the setting that differs, then the results
    for row in rows:
        losses = [r["loss"] for r in read_metrics(runs / row["run"]) if "loss" in r]
        assert float(row["train_loss_final"]) == pytest.approx(losses[-1], rel=1e-12)
        assert float(row["train_loss_best"]) == pytest.approx(min(losses), rel=1e-12)
        assert row["seed"] == row["run"][-1] and row["steps"] == str(STEPS) and float(row["wall_s"]) > 0
    markdown = (out_dir / "comparison.md").read_text()
    assert markdown.splitlines()[0].startswith("| run | seed | steps | train_loss_final | train_loss_best |")
    assert markdown in capsys.readouterr().out
    picture = read_image(out_dir / "training_loss.png")
    assert picture.ndim == 3 and picture.shape[0] > 100 and picture.std() > 0
    assert not (out_dir / "held_out_loss.png").exists()  # the autoencoder logs no held-out loss


def _fake_run(path, config, losses, val_losses=None, probe=None):
    """A run's three files as the trainers and the probe write them."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    rows = [{"step": i + 1, "time": 100.0 + 2 * i, "loss": v} for i, v in enumerate(losses)]
    rows += [{"step": s, "time": 100.0 + 2 * s, "eval/val_loss": v} for s, v in (val_losses or [])]
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    if probe:
        (path / "probe_report.json").write_text(json.dumps({"rates": probe, "chance": {"colour": 0.125}}))
    return str(path)


def test_compare_reports_held_out_losses_and_probe_agreement_with_intervals(tmp_path, capsys):
    config = {"seed": 0, "data": {"framing": "native", "rows": 4}, "train": {"steps": 3}}
    native = _fake_run(tmp_path / "native", config, [1.0, 0.5, 0.7], [(2, 0.9), (3, 0.8)],
                       {"colour": 0.5, "num_colour": 48, "in_frame": 1.0, "num_in_frame": 48})
    square = _fake_run(tmp_path / "square", {**config, "data": {"framing": "square", "rows": 8}}, [2.0, 1.5, 1.2],
                       [(3, 1.1)], {"colour": 0.25, "num_colour": 48, "in_frame": 0.75, "num_in_frame": 48})
    compare.main([native, square, f"--out={tmp_path / 'out'}", "--x=data.rows"])
    with open(tmp_path / "out" / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["run", "data.framing", "data.rows", "steps", "train_loss_final", "train_loss_best", "val_loss_final",
                             "val_loss_best", "probe_colour", "probe_colour_low", "probe_colour_high", "probe_in_frame",
                             "probe_in_frame_low", "probe_in_frame_high", "wall_s"]
    values = [{k: float(v) for k, v in r.items() if k not in ("run", "data.framing")} for r in rows]
    assert [(r["data.framing"], values[i]["data.rows"]) for i, r in enumerate(rows)] == [("native", 4), ("square", 8)]
    assert values[0]["train_loss_final"] == 0.7 and values[0]["train_loss_best"] == 0.5
    assert values[0]["val_loss_final"] == 0.8 and values[0]["val_loss_best"] == 0.8 and values[1]["val_loss_best"] == 1.1
    # Wilson 95% interval of 24 of 48: 36.4% - 63.6%; wall time from the first to the last logged row
    np.testing.assert_allclose([values[0]["probe_colour_low"], values[0]["probe_colour_high"]], [0.3639, 0.6361],
                               atol=1e-4)
    assert values[0]["probe_in_frame_high"] == 1.0 and values[0]["wall_s"] == 6.0 and values[1]["steps"] == 3
    table = (tmp_path / "out" / "comparison.md").read_text().splitlines()
    assert table[2] == "| native | native | 4 | 3 | 0.7 | 0.5 | 0.8 | 0.8 | 50% [36%-64%] | 100% [93%-100%] | 6 |"
    for name in ("training_loss.png", "held_out_loss.png", "probe.png", "against_data.rows.png"):
        assert read_image(tmp_path / "out" / name).shape[0] > 100
    runs = [read_run(square, "square"), read_run(native, "native")]
    assert against_setting(runs, "data.rows") == [
        ("final held-out loss", [("val_loss", [4, 8], [0.8, 1.1])]),
        ("probe agreement", [("colour", [4, 8], [0.5, 0.25]), ("in_frame", [4, 8], [1.0, 0.75])])]
    with pytest.raises(ValueError, match="--x=data.framing must be a number in every run"):
        against_setting(runs, "data.framing")
    capsys.readouterr()
    with pytest.raises(FileNotFoundError, match="has no config.json: not a trained sorajax run"):
        compare.main([str(tmp_path), f"--out={tmp_path / 'out2'}"])


def test_members_are_grids_and_zips_with_readable_unique_names():
    members = grid({"train.steps": [250, 1000]}, {"data.framing": ["native", "square"], "eval.every": [5, 6]})
    assert members[1] == {"train.steps": 250, "data.framing": "square", "eval.every": 6} and len(members) == 4
    assert zipped({"a.x": [1, 2], "b.y": [3, 4]}) == [{"a.x": 1, "b.y": 3}, {"a.x": 2, "b.y": 4}]
    assert member_names(members)[:2] == ["steps=250,framing=native,every=5", "steps=250,framing=square,every=6"]
    assert member_names([{}, {"data.sizes": ((9, 64, 64), (1, 64, 64))}, {"a.steps": 1, "b.steps": 2}]) == [
        "base", "sizes=9x64x64+1x64x64", "a.steps=1,b.steps=2"]
    slashed = member_names([{"vae_workdir": "runs/a"}, {"vae_workdir": "runs-a"}])  # the same once made safe
    assert slashed[0].startswith("vae_workdir=runs-a,") and slashed[0] != slashed[1]
    assert member_names([{"a": 1}]) == member_names([{"a": 1}])  # stable
    with pytest.raises(ValueError, match="zipped needs non-empty lists of one length"):
        zipped({"a": [1, 2], "b": [3]})
    with pytest.raises(ValueError, match="sweep members 0 and 1 have the same overrides"):
        member_names([{"a": 1}, {"a": 1}])


def test_print_writes_one_launch_command_per_member_and_runs_nothing(tmp_path, capsys):
    vae = tmp_path / "no_vae_yet"
    sweep_file = _write(tmp_path / "framing.py", f'''
from sorajax.sweeps import grid
SHARED = {{"vae_workdir": "{vae}"}}
PROBE_PROMPTS = 8
MEMBERS = grid({{"data.framing": ["native", "square"]}})
''')
    sweep.main([f"--sweep={sweep_file}", f"--workdir={tmp_path / 'w'}", "--config=configs/dit_tiny.py:smoke",
                "--config.train.steps=2", "--print"])
    out, err = capsys.readouterr()
    run = tmp_path / "w" / "framing=square"
    assert out.splitlines()[1] == (
        f"python -m sorajax.train_dit --config=configs/dit_tiny.py:smoke --workdir={run} --config.vae_workdir={vae} "
        f"--config.data.framing=square --config.train.steps=2 && python -m sorajax.probe --run={run} --num_prompts=8 "
        f"--out={run}")
    assert len(out.splitlines()) == 2 and not run.exists()
    assert f"note: a DiT sweep needs a trained autoencoder, and vae_workdir='{vae}' has no checkpoint" in err
    manifest = json.loads((tmp_path / "w" / "sweep.json").read_text())
    assert [m["status"] for m in manifest["members"]] == ["pending", "pending"]
    # Run rather than printed, the missing autoencoder is one error before anything starts.
    with pytest.raises(ValueError, match="a DiT sweep needs a trained autoencoder"):
        sweep.main([f"--sweep={sweep_file}", f"--workdir={tmp_path / 'w'}", "--config=configs/dit_tiny.py:smoke"])


@pytest.mark.parametrize("members, message", [
    ('[{"seed": 1}, {"train.stepz": 3}]', "sweep member stepz=3: train.stepz=3 is refused: unknown key 'stepz' in config 'train'"),
    ('[{"seed": 1}, {"data.batch_size": 0}]', "sweep member batch_size=0: data.batch_size must be >= 1, got 0"),
    ('[{"seed": 1}, {"train.steps": 2.5}]', "sweep member steps=2.5: train.steps=2.5 is refused: Could not override"),
])
def test_a_bad_member_is_refused_before_any_member_trains(tmp_path, members, message):
    sweep_file = _write(tmp_path / "bad.py", f'CONFIG = "configs/vae_tiny.py:smoke"\nMEMBERS = {members}\n')
    with pytest.raises(ValueError, match=message):
        plan_sweep(load_sweep(sweep_file), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_a_finished_member_made_with_other_settings_is_refused(interrupted_and_resumed, tmp_path):
    sweep_file = _write(tmp_path / "seeds.py", VAE_SWEEP)
    with pytest.raises(ValueError, match=r"sweep member seed=0: its run .* was trained with other settings "
                                         r"\(train.learning_rate: 0.0003 -> 0.001\); pass another --workdir"):
        plan_sweep(load_sweep(sweep_file), str(interrupted_and_resumed["workdir"]),
                   cli_overrides={"train.learning_rate": "1e-3"})


def test_a_failing_member_is_one_line_and_the_sweep_goes_on(tmp_path):
    """The runner with stand-in commands (a crash, and an exit 0 that saved nothing), so no trainer starts."""
    from sorajax.sweeps.runner import SweepRunner

    sweep_file = _write(tmp_path / "two.py", 'CONFIG = "configs/vae_tiny.py:smoke"\nMEMBERS = [{"seed": 1}, {"seed": 2}]\n')
    plan = plan_sweep(load_sweep(sweep_file), str(tmp_path / "w"))
    plan.members[0].commands = [["python", "-c", "import sys; print('step 1'); print('error: boom'); sys.exit(3)"]]
    plan.members[1].commands = [["python", "-c", "print('nothing saved')"]]
    lines = []
    assert SweepRunner(plan, say=lines.append).run() == 1
    log = tmp_path / "w" / "seed=1" / "sweep.log"
    assert f"[1/2] seed=1: failed (exit 3): error: boom (log: {log})" in lines
    assert "[2/2] seed=2: interrupted before its first checkpoint; run the sweep again to resume" in lines[-2]
    assert lines[-1].startswith("sweep: 0 of 2 members done, 1 failed, 1 interrupted;")
    manifest = json.loads((tmp_path / "w" / "sweep.json").read_text())
    assert [(m["status"], m["exit_code"], m["note"]) for m in manifest["members"]] == [
        ("failed", 3, "error: boom"), ("interrupted", 0, "stopped before its first checkpoint")]
