"""The cases here need 8 (fake CPU) devices; the test_parallel_*.py wrappers start them in a subprocess.

XLA reads the device count when the CPU backend starts, so it is set before any
test touches a device (tests/conftest.py imports jax but starts no backend).
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
