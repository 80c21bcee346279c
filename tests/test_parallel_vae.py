"""The autoencoder trains sharded over a mesh: same step as one device, sharded state, train_vae with a mesh.

Cases: tests/parallel_cases/cases_vae_sharding.py, run on 8 fake CPU devices in a subprocess.
"""

from tests.eight_devices import run_cases


def test_sharded_autoencoder_training_matches_one_device():
    run_cases("cases_vae_sharding.py")
