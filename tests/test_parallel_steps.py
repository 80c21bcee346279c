"""Sharded train/sampling steps equal one device for data, fsdp, tensor, sequence and mixed meshes.

Cases: tests/parallel_cases/cases_sharded_steps.py, run on 8 fake CPU devices in a subprocess.
"""

from tests.eight_devices import run_cases


def test_sharded_train_and_sampling_steps_match_one_device():
    run_cases("cases_sharded_steps.py")
