"""benchmarks/bench.py: the peak's FLOPs are counted right, and a step that beats the peak is
reported as a wrong peak, never as a ratio above 1."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests._trained import benchmark_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return benchmark_script("bench")


def test_peak_kernels_count_the_flops_they_run(bench: ModuleType) -> None:
    # The CPU's matmul and convolution shapes, on the meta device: counted, not computed.
    # (The oneDNN inner product exists on the CPU only; its FLOPs are mm_4096's formula.)
    kernels = bench.peak_kernels(torch.device("meta"), "fp32")
    names = ["mm_2048", "mm_4096", "conv3x3", "conv1x1", "conv4x4_stride2"]
    assert [kernel.name for kernel in kernels] == names
    for kernel in kernels:
        run = kernel.setup()
        with FlopCounterMode(display=False) as counter:
            run()
        assert counter.get_total_flops() == kernel.flops, kernel.name


def case_result(train_gflops: dict[str, float], score_gflops: float) -> dict[str, object]:
    """A measured case as `measure_case` returns it: 1,000 MFLOP per image, so images/s
    equal GFLOP/s."""
    return {
        "case": "mnist", "image": "32x32x1", "batch_size": 64, "score_batch_size": 256,
        "train_mflop_per_image": 1000.0, "score_mflop_per_image": 1000.0,
        "train_rates": {name: [rate] * 3 for name, rate in train_gflops.items()},
        "score_rates": [score_gflops] * 3,
    }  # fmt: skip


def peaks(fp32: float, bf16: float) -> dict[str, dict[str, float]]:
    return {"fp32": {"peak_gflops": fp32}, "bf16": {"peak_gflops": bf16}}


def test_ratios_to_the_peak_of_the_precision_that_ran(bench: ModuleType) -> None:
    out = bench.summarize(case_result({"fp32": 50.0, "bf16": 80.0}, 40.0), peaks(100.0, 400.0))
    assert out["train_peak_ratio"] == 0.5 and out["score_peak_ratio"] == 0.4
    assert out["bf16"]["train_peak_ratio"] == 0.2
    assert out["bf16"]["speedup_vs_fp32"] == 1.6
    assert out["bf16"]["score_peak_ratio"] == 0.4  # scoring is fp32 whatever the training
    assert "peak_note" not in out


def test_a_step_above_its_peak_says_the_peak_is_wrong(bench: ModuleType) -> None:
    out = bench.summarize(case_result({"fp32": 150.0, "bf16": 500.0}, 40.0), peaks(100.0, 400.0))
    assert out["train_peak_ratio"] is None and out["bf16"]["train_peak_ratio"] is None
    assert out["score_peak_ratio"] == 0.4
    assert out["peak_note"] == (
        "train step at 150.0 GFLOP/s exceeds the fp32 peak of 100.0: the peak measurement is "
        "wrong; bf16 train step at 500.0 GFLOP/s exceeds the bf16 peak of 400.0: the peak "
        "measurement is wrong"
    )
    assert bench.ratio_text(None, "fp32") == "ABOVE the fp32 peak: the peak measurement is wrong"


def test_the_bench_waits_as_the_ganomaly_command_does() -> None:
    """The bench measures with the OpenMP wait defaults the command sets before torch starts."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from ganomaly.process import OPENMP_WAIT_DEFAULTS, OPENMP_WAIT_VARIABLES

    probe = (
        "import json, os; from tests._trained import benchmark_script; benchmark_script('bench'); "
        f"print(json.dumps({{k: os.environ.get(k) for k in {list(OPENMP_WAIT_DEFAULTS)!r}}}))"
    )
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_WAIT_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[1],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == OPENMP_WAIT_DEFAULTS
