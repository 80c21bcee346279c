"""The AOT report's logic, compiled for the 8 fake CPU devices (no libtpu needed)."""

import pytest

from sorajax.aot_compile import CompileReport, compile_train_step, topology_devices
from sorajax.config_loading import load_config


def test_compile_report_for_the_tiny_scale_config_on_eight_devices():
    config = load_config("configs/dit_scale.py:tiny8")
    report = compile_train_step(config, topology_devices("cpu"), "cpu")
    assert report.chips == 8 and report.mesh.startswith("data=2 fsdp=2 sequence=2 tensor=1")
    assert report.tokens_per_step == 4 * 64
    assert 1.6e6 < report.params < 1.8e6
    # Per chip the state is about 1/fsdp of params + EMA + 2 Adam moments (4 copies x 4 bytes)...
    full_state = 4 * 4 * report.params
    assert full_state / 2 * 0.9 < report.state_bytes_per_chip < full_state / 2 * 1.5
    assert report.bytes_per_chip >= report.state_bytes_per_chip
    # ...and the FLOPs are at least 6 x params x tokens / chips (forward + backward of the matmuls).
    assert report.flops_per_chip > 6 * report.params * report.tokens_per_step / 8 * 0.5
    assert report.fits is None and any("TFLOP" in line for line in report.lines())
    # The tiny config has no scanned layers and XLA attention: XLA's count and the shape count agree.
    assert report.model_flops == pytest.approx(report.tflops_per_step * 1e12, rel=0.02)


def test_fits_compares_against_the_chip_memory():
    small = CompileReport("v5p:2x2x1", "TPU v5", 4, "m", 1, 1, 10, 5, 5, 1e12, hbm_bytes=100)
    big = CompileReport("v5p:2x2x1", "TPU v5", 4, "m", 1, 1, 200, 5, 5, 1e12, hbm_bytes=100)
    assert small.fits is True and big.fits is False
    assert small.tflops_per_step == pytest.approx(4.0)
    assert "DOES NOT FIT" in "\n".join(big.lines())


def test_sample_step_compiles_both_guidance_branches_with_bf16_weights():
    from sorajax.aot_compile import compile_sample_step

    config = load_config("configs/dit_scale.py:tiny8")
    report = compile_sample_step(config, topology_devices("cpu"), "cpu")
    assert report.tokens_per_step == 2 * 4 * 64  # the conditional and unconditional rows of 4 clips
    assert report.state_bytes_per_chip < 2 * report.params  # bf16 weights, no optimizer state
    # The shape count charges the text projections per video token: ~10% above XLA on this short-row config.
    assert report.model_flops == pytest.approx(report.tflops_per_step * 1e12, rel=0.15)


def test_lora_train_step_holds_adapters_as_state_and_the_base_in_bf16():
    config = load_config("configs/dit_scale.py:tiny8")
    full = compile_train_step(config, topology_devices("cpu"), "cpu")
    config.train.lora = dict(rank=4, alpha=4.0)
    config.train.init_from = "runs/base"  # only recorded: the compile reads no weights
    lora = compile_train_step(config, topology_devices("cpu"), "cpu")
    # Full: params + EMA + 2 Adam moments in f32 (16 bytes a parameter); LoRA: the base in bf16 (2 bytes)
    # plus the adapters' 4 f32 copies and the batch, all over fsdp=2: about a sixth of the full state here.
    base_bf16 = 2 * full.params / 2
    assert base_bf16 < lora.state_bytes_per_chip < full.state_bytes_per_chip / 4
    # The base's forward and the backward through it still run, but frozen kernels need no weight gradient:
    # about 2/3 of a full step's matmuls.
    assert 0.6 * full.flops_per_chip < lora.flops_per_chip < 0.8 * full.flops_per_chip
