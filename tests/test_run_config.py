"""A run's config record: changed settings on resume are named and the earlier config is kept."""

import json

import ml_collections

from sorajax.runs.records import HISTORY_FILE, record_run_config, setting_changes


def _config(steps=1000, rows=8):
    return ml_collections.ConfigDict(dict(train=dict(steps=steps, learning_rate=3e-3),
                                          data=dict(rows=rows, sizes=((9, 64, 64), (1, 64, 64)))))


def test_setting_changes_names_each_changed_leaf_and_treats_tuples_as_saved_lists():
    saved = json.loads(_config().to_json_best_effort())
    assert setting_changes(saved, _config().to_dict()) == []  # tuples in the config, lists in the file
    changes = setting_changes(saved, {**_config(2000, 4).to_dict(), "eval": {"every": 5}})
    assert changes == ["data.rows: 8 -> 4", "eval.every: <unset> -> 5", "train.steps: 1000 -> 2000"]


def test_fresh_run_writes_the_config_and_keeps_no_history(tmp_path):
    (tmp_path / "config.json").write_text('{"left": "over"}')  # a fresh run replaces leftovers silently
    assert record_run_config(str(tmp_path), _config(), resumed_step=None) == []
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 1000
    assert not (tmp_path / HISTORY_FILE).exists()


def test_resume_with_changed_settings_says_so_and_keeps_the_earlier_config(tmp_path, capsys):
    record_run_config(str(tmp_path), _config(), resumed_step=None)
    assert record_run_config(str(tmp_path), _config(), resumed_step=500) == []  # same settings: nothing to say
    assert not (tmp_path / HISTORY_FILE).exists()
    changes = record_run_config(str(tmp_path), _config(2000, 4), resumed_step=1000)
    assert changes == ["data.rows: 8 -> 4", "train.steps: 1000 -> 2000"]
    said = capsys.readouterr().out
    assert "resuming at step 1000" in said and "train.steps: 1000 -> 2000" in said and "--workdir" in said
    history = [json.loads(line) for line in (tmp_path / HISTORY_FILE).read_text().splitlines()]
    assert len(history) == 1 and history[0]["replaced_at_step"] == 1000
    assert history[0]["config"]["train"]["steps"] == 1000 and history[0]["config"]["data"]["rows"] == 8
    assert json.loads((tmp_path / "config.json").read_text())["data"]["rows"] == 4
