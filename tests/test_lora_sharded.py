"""LoRA training sharded over 8 fake CPU devices equals one device (cases in tests/parallel_cases/cases_lora.py)."""

from tests.eight_devices import run_cases


def test_lora_on_eight_devices():
    run_cases("cases_lora.py")
