"""Context parallelism (ring / Ulysses) on 8 fake devices; cases in tests/parallel_cases/cases_context_parallel.py."""

from tests.eight_devices import run_cases


def test_ring_and_ulysses_match_full_attention_on_eight_devices():
    run_cases("cases_context_parallel.py")
