"""Run paths: one path type for local folders and buckets, links between runs, whole-file writes for object stores."""

import json
import os

import numpy as np

from sorajax.runs.metrics import MetricsWriter, read_metrics
from sorajax.runs.paths import RunLink, run_path, write_text_atomic
from sorajax.video_io import read_image, writable_file, write_image


def test_local_paths_become_absolute_and_urls_stay_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(run_path("runs/x")) == os.path.join(str(tmp_path), "runs", "x")
    assert str(run_path("gs://bucket/run")) == "gs://bucket/run"


def test_a_link_tries_the_relative_place_first_then_the_absolute_one():
    link = RunLink.between("/work/runs/vae", "/work/runs/dit")
    assert link == RunLink(relative="../vae", absolute="/work/runs/vae")
    assert RunLink.from_json(json.loads(json.dumps(link.to_json()))) == link
    assert [str(p) for p in link.candidates("/moved/runs/dit")] == ["/moved/runs/vae", "/work/runs/vae"]
    assert [str(p) for p in link.candidates("/work/runs/dit")] == ["/work/runs/vae"]  # the same place, once
    bucket = RunLink.between("gs://b/vae", "gs://b/dit")
    assert bucket.relative is None and [str(p) for p in bucket.candidates("gs://b/dit")] == ["gs://b/vae"]


def test_metrics_rewritten_whole_where_files_cannot_be_appended(tmp_path):
    """Object stores cannot append: the writer keeps the lines and rewrites the file (tested on a local path)."""
    write_text_atomic(run_path(tmp_path / "metrics.jsonl"), json.dumps({"step": 1, "loss": 3.0}) + "\n")
    writer = MetricsWriter(tmp_path, enabled=True, append=False)
    writer.write_scalars(2, {"loss": np.float32(2.5)})
    writer.write_scalars(3, {"loss": 2.0})
    writer.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(1, 3.0), (2, 2.5), (3, 2.0)]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_samples_for_a_bucket_go_through_a_local_file_and_are_copied(tmp_path):
    with writable_file(tmp_path / "copied" / "a.txt", copy=True) as local:
        assert local.parent != tmp_path / "copied"  # a temporary file, as for gs://
        local.write_text("frames")
    assert (tmp_path / "copied" / "a.txt").read_text() == "frames"
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    write_image(tmp_path / "deep" / "er" / "x.png", image)  # parents are made
    np.testing.assert_array_equal(read_image(tmp_path / "deep" / "er" / "x.png"), image)
