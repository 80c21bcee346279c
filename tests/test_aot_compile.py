"""AOT compile report (memory per chip, FLOPs, fits) on 8 fake CPU devices; cases in parallel_cases/cases_aot.py."""

import pytest

from tests.eight_devices import run_cases


def test_aot_report_on_eight_fake_devices():
    run_cases("cases_aot.py")


def test_unknown_topology_names_the_fix():
    from sorajax.aot_compile import topology_devices

    with pytest.raises(ValueError, match="v5p:2x2x1"):
        topology_devices("v9z:1x1")
