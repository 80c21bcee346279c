"""A checkpoint saved on one mesh restores on another (tests/parallel_cases/cases_checkpoint.py, 8 fake devices)."""

from tests.eight_devices import run_cases


def test_checkpoint_moves_between_meshes():
    run_cases("cases_checkpoint.py")
