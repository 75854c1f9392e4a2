"""Throughput of GANomaly training and scoring, measured against this machine's own peak.

One process measures, with one thread setting throughout:
    (a) the peak: the best GFLOP/s this machine reaches with the kernels PyTorch can use, in
        float32 and, where the hardware computes in bfloat16 natively (AVX512-BF16 or AMX on
        a CPU, a bf16 GPU), in bfloat16: torch.mm (MKL's sgemm in float32 on x86 CPUs), a
        oneDNN inner product, and large channels_last convolutions (3x3, 1x1 and the 4x4
        stride-2 kind GANomaly is made of), forward; every candidate is printed;
    (b) training throughput (images/s) of the real loop (`ganomaly.training.run_epoch`) in
        fp32 and, where bf16 is native, with `precision="bf16"` (the library's own autocast),
        the two taking turns window by window so a busy spell hits both alike;
    (c) scoring throughput (images/s) of the real path (`ganomaly.scoring.score_tensor`),
        always float32, as the library scores;
    (d) peak resident memory;
and prints, for (b) and (c), the achieved GFLOP/s and its ratio to the peak of the precision
that ran. A ratio cannot exceed 1: if a step does, the peak measurement was wrong and the
bench says so instead of printing it.

The FLOPs per image are those of the algorithm, counted once with FlopCounterMode on the
minimal faithful step (G forward and backward; D forwards on x, on x_hat for L_adv and on
x_hat.detach() for L_D; D backward; no D weight gradients from the G loss), and for scoring
on the generator's forward pass (E1, decoder, E2). A faster implementation of the same
algorithm therefore raises the ratio.

    python benchmarks/bench.py                      # every CPU case, text
    python benchmarks/bench.py --case mnist --json  # one JSON object, 32x32x1 batch 64
    python benchmarks/bench.py --device cuda        # the same on a GPU (adds 256x256x3)
    python benchmarks/bench.py --threads 1          # thread count for peak and step alike
"""

from __future__ import annotations

import argparse
import os
import sys

# OpenMP reads how to wait when torch starts its thread pool, i.e. at import: the bench uses
# the `ganomaly` command's default (`set_openmp_defaults`, before torch) unless told otherwise.
if "--omp-wait-policy" in sys.argv:
    os.environ["OMP_WAIT_POLICY"] = sys.argv[sys.argv.index("--omp-wait-policy") + 1]
from ganomaly.process import set_openmp_defaults  # noqa: E402  (torch-free)

set_openmp_defaults()

# isort: split

import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from ganomaly.config import DetectorConfig  # noqa: E402
from ganomaly.hardware import device_description, native_bf16  # noqa: E402
from ganomaly.losses import discriminator_loss, generator_losses  # noqa: E402
from ganomaly.model import Discriminator, Generator, make_networks  # noqa: E402
from ganomaly.scoring import AnomalyScorer, score_tensor  # noqa: E402
from ganomaly.training import (  # noqa: E402
    TrainState,
    make_optimizers,
    prepare_training,
    run_epoch,
)


@dataclass
class Case:
    name: str
    size: int
    channels: int
    batch_size: int
    score_batch_size: int = 256


CASES = {
    "mnist": Case("mnist", 32, 1, 64),
    "mvtec64": Case("mvtec64", 64, 3, 32),
    "mvtec128": Case("mvtec128", 128, 3, 32, 64),
    "gpu256": Case("gpu256", 256, 3, 32, 64),
}
CPU_CASES = ("mnist", "mvtec64", "mvtec128")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PEAK_WINDOW_S = 0.05  # shortest timed window of a peak kernel (fast GPU kernels loop)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- (a) the peak ---------------------------------------------------------------------------
@dataclass
class PeakKernel:
    """One candidate for the peak: the call `setup()` returns performs `flops` floating-point
    operations. Operands are made by `setup`, one kernel at a time, so the peak adds no more
    than one kernel's operands to the bench's peak memory."""

    name: str
    library: str  # what PyTorch dispatches it to on this device and dtype
    flops: float
    setup: Callable[[], Callable[[], object]]


def _mm_kernel(
    name: str, library: str, n: int, device: torch.device, dtype: torch.dtype
) -> PeakKernel:
    def setup() -> Callable[[], object]:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        out = torch.empty(n, n, device=device, dtype=dtype)
        return lambda: torch.mm(a, b, out=out)

    return PeakKernel(name, library, 2.0 * n**3, setup)


def _onednn_linear_kernel(n: int, dtype: torch.dtype) -> PeakKernel:
    """oneDNN's inner product on oneDNN-layout tensors: its own matmul, apart from MKL's sgemm."""

    def setup() -> Callable[[], object]:
        x, weight = (torch.randn(n, n, dtype=dtype).to_mkldnn() for _ in range(2))
        linear = torch._C._nn.mkldnn_linear  # type: ignore[attr-defined]
        return lambda: linear(x, weight, None)

    return PeakKernel(f"onednn_linear_{n}", "oneDNN", 2.0 * n**3, setup)


def _conv_kernel(
    name: str, library: str, batch: int, c_in: int, c_out: int, size: int, kernel: int,
    stride: int, device: torch.device, dtype: torch.dtype,
) -> PeakKernel:  # fmt: skip
    """A channels_last convolution, forward (the layout GANomaly trains in)."""
    padding = {1: 0, 3: 1, 4: 1}[kernel]
    out_size = (size + 2 * padding - kernel) // stride + 1
    flops = 2.0 * batch * c_out * c_in * kernel * kernel * out_size * out_size

    def setup() -> Callable[[], object]:
        x = torch.randn(batch, c_in, size, size, device=device, dtype=dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        weight = torch.randn(c_out, c_in, kernel, kernel, device=device, dtype=dtype)
        weight = weight.contiguous(memory_format=torch.channels_last)

        def run() -> object:
            with torch.inference_mode():
                return F.conv2d(x, weight, stride=stride, padding=padding)

        return run

    return PeakKernel(name, library, flops, setup)


def peak_kernels(device: torch.device, precision: str) -> list[PeakKernel]:
    """The candidates for the peak of `precision` on `device`: dense matrix multiplies and
    large channels_last convolutions, each through the library PyTorch sends it to."""
    dtype = DTYPES[precision]
    cuda = device.type == "cuda"
    if cuda:
        gemm, conv = "cuBLAS", "cuDNN"
    else:
        blas = "MKL sgemm" if torch.backends.mkl.is_available() else "BLAS sgemm"
        gemm, conv = (blas if precision == "fp32" else "oneDNN matmul"), "oneDNN"
    scale = 8 if cuda else 1  # a GPU needs more work per call to reach its peak
    kernels = [
        _mm_kernel(f"mm_{n}", gemm, n, device, dtype)
        for n in ((4096, 8192) if cuda else (2048, 4096))
    ]
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        kernels.append(_onednn_linear_kernel(4096, dtype))
    kernels += [
        _conv_kernel("conv3x3", conv, 32 * scale, 256, 256, 28, 3, 1, device, dtype),
        _conv_kernel("conv1x1", conv, 32 * scale, 512, 512, 28, 1, 1, device, dtype),
        _conv_kernel("conv4x4_stride2", conv, 128 * scale, 128, 256, 32, 4, 2, device, dtype),
    ]
    return kernels


def best_gflops(kernel: PeakKernel, device: torch.device, repeats: int) -> float:
    """Best GFLOP/s of `repeats` timed windows, after a warm-up call (oneDNN and cuDNN pick
    and compile their kernels on the first one)."""
    run = kernel.setup()
    run()
    sync(device)
    started = time.perf_counter()
    run()
    sync(device)
    calls = max(1, math.ceil(PEAK_WINDOW_S / (time.perf_counter() - started)))
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            run()
        sync(device)
        best = max(best, calls * kernel.flops / (time.perf_counter() - started) / 1e9)
    return best


def measure_peak(device: torch.device, precision: str, repeats: int) -> dict[str, Any]:
    """{"peak_gflops", "kernel" (the one that reached it), "library", "gflops" (every one)}."""
    kernels = peak_kernels(device, precision)
    gflops = {kernel.name: best_gflops(kernel, device, repeats) for kernel in kernels}
    best = max(kernels, key=lambda kernel: gflops[kernel.name])
    return {
        "peak_gflops": gflops[best.name],
        "kernel": best.name,
        "library": best.library,
        "gflops": gflops,
        "libraries": {kernel.name: kernel.library for kernel in kernels},
    }


# -- (b), (c) the training step and scoring ------------------------------------------------
def _set_requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(flag)


def train_flops_per_image(
    generator: Generator, discriminator: Discriminator, x: torch.Tensor
) -> float:
    """FLOPs of the minimal faithful training step, per image (independent of our train_step)."""
    with FlopCounterMode(display=False) as counter:
        x_hat, z, z_hat = generator(x)
        features_real = discriminator.features(x)  # D forward 1 (real), reused for L_D
        _set_requires_grad(discriminator, False)  # no D weight gradients from L_G
        features_fake = discriminator.features(x_hat)  # D forward 2 (for L_adv)
        _set_requires_grad(discriminator, True)
        l_g = generator_losses(x, x_hat, z, z_hat, features_real.detach(), features_fake).l_g
        l_g.backward()  # G backward, through D's input gradients
        logits_real = discriminator.classify(features_real)
        logits_fake = discriminator(x_hat.detach())  # D forward 3 (for L_D)
        discriminator_loss(logits_real, logits_fake).backward()  # D backward
    generator.zero_grad(set_to_none=True)
    discriminator.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


def score_flops_per_image(generator: Generator, x: torch.Tensor) -> float:
    """FLOPs of the scoring forward pass (E1, decoder, E2), per image."""
    generator.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        generator(x)
    return counter.get_total_flops() / len(x)


def timed_windows(
    runners: dict[str, Callable[[], int]], device: torch.device, warmup: int, windows: int
) -> dict[str, list[float]]:
    """images/s of `windows` timed calls of each runner (which returns its image count); the
    runners take turns window by window, so a busy spell on a shared machine slows them alike."""
    for _ in range(warmup):
        for run_once in runners.values():
            run_once()
    sync(device)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(windows):
        for name, run_once in runners.items():
            started = time.perf_counter()
            n = run_once()
            sync(device)
            rates[name].append(n / (time.perf_counter() - started))
    return rates


def measure_case(
    case: Case, device: torch.device, args: argparse.Namespace, precisions: list[str]
) -> dict[str, Any]:
    """Training images/s in each of `precisions` (through the library's `precision` setting)
    and float32 scoring images/s, with the FLOPs per image of each."""
    shape = (case.size, case.size)
    steps = args.train_steps or max(2, round(args.window_images / case.batch_size))
    images = torch.rand(steps * case.batch_size, case.channels, *shape, device=device) * 2 - 1
    runners: dict[str, Callable[[], int]] = {}
    for precision in precisions:
        config = DetectorConfig(
            image_size=str(case.size), channels=case.channels, batch_size=case.batch_size,
            progress=False, device=device.type, seed=0, precision=precision,
        )  # fmt: skip
        generator, discriminator = make_networks(shape, case.channels, config.nz, config.ngf, 0, 0)
        generator.to(device)
        discriminator.to(device)
        if precision == precisions[0]:
            x = torch.rand(case.batch_size, case.channels, *shape, device=device) * 2 - 1
            train_flops = train_flops_per_image(generator, discriminator, x)
            x = torch.rand(8, case.channels, *shape, device=device) * 2 - 1
            score_flops = score_flops_per_image(generator, x)
            scorer = AnomalyScorer(generator, "l2", 1.0, 0.0, 2.0).to(device)
        optimizers = make_optimizers(generator, discriminator, config)
        state = TrainState(generator, discriminator, *optimizers, config)
        batches = prepare_training(state, images)  # as `ganomaly.training.train` does

        def train_once(state: TrainState = state, batches: torch.Tensor = batches) -> int:
            run_epoch(state, batches, case.batch_size, progress=False)
            return steps * case.batch_size

        runners[precision] = train_once
    train_rates = timed_windows(runners, device, args.warmup, args.windows)

    score_images = (
        torch.rand(max(1, args.score_batches) * case.score_batch_size, case.channels, *shape) * 2
        - 1
    )
    if device.type == "cuda":
        score_images = score_images.pin_memory()

    def score_once() -> int:
        score_tensor(scorer, score_images, case.score_batch_size, device=device)
        return len(score_images)

    score_rates = timed_windows({"fp32": score_once}, device, args.warmup, args.windows)["fp32"]
    return {
        "case": case.name,
        "image": f"{case.size}x{case.size}x{case.channels}",
        "batch_size": case.batch_size,
        "score_batch_size": case.score_batch_size,
        "train_mflop_per_image": train_flops / 1e6,
        "score_mflop_per_image": score_flops / 1e6,
        "train_rates": train_rates,
        "score_rates": score_rates,
    }


def peak_ratio(gflops: float, peak: float) -> float | None:
    """gflops / peak, or None when that exceeds 1: the peak measurement was then wrong."""
    ratio = gflops / peak
    return ratio if ratio <= 1.0 else None


def throughput(rates: list[float], mflop_per_image: float, peak: float) -> dict[str, Any]:
    """The median of timed windows as images/s, GFLOP/s and a ratio to `peak`."""
    median = statistics.median(rates)
    gflops = median * mflop_per_image / 1e3
    return {
        "images_per_second": median,
        "images_per_second_min": min(rates),
        "gflops": gflops,
        "peak_ratio": peak_ratio(gflops, peak),
    }


def summarize(result: dict[str, Any], peaks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON fields of a case: fp32 figures at the top level, bf16 training in `bf16`."""
    train_rates, score_rates = result.pop("train_rates"), result.pop("score_rates")
    fp32_peak = peaks["fp32"]["peak_gflops"]
    train_mflop, score_mflop = result["train_mflop_per_image"], result["score_mflop_per_image"]
    out = {**result, "precision": "fp32", "train_rates": train_rates["fp32"]}
    train = throughput(train_rates["fp32"], train_mflop, fp32_peak)
    score = throughput(score_rates, score_mflop, fp32_peak)
    out.update({f"train_{key}": value for key, value in train.items()})
    out["score_rates"] = score_rates
    out.update({f"score_{key}": value for key, value in score.items()})
    notes = [
        f"{kind} step at {figures['gflops']:.1f} GFLOP/s exceeds the fp32 peak of "
        f"{fp32_peak:.1f}: the peak measurement is wrong"
        for kind, figures in (("train", train), ("score", score))
        if figures["peak_ratio"] is None
    ]
    if "bf16" in train_rates:
        bf16_peak = peaks["bf16"]["peak_gflops"]
        bf16 = throughput(train_rates["bf16"], train_mflop, bf16_peak)
        if bf16["peak_ratio"] is None:
            notes.append(
                f"bf16 train step at {bf16['gflops']:.1f} GFLOP/s exceeds the bf16 peak of "
                f"{bf16_peak:.1f}: the peak measurement is wrong"
            )
        out["bf16"] = {
            "train_images_per_second": bf16["images_per_second"],
            "train_images_per_second_min": bf16["images_per_second_min"],
            "train_gflops": bf16["gflops"],
            "train_rates": train_rates["bf16"],
            # scoring is float32 whatever the training precision (as in the library), so a
            # bf16-trained model scores at the fp32 figures, against the fp32 peak
            "score_precision": "fp32",
            "score_images_per_second": score["images_per_second"],
            "score_peak_ratio": score["peak_ratio"],
            "peak_gflops": bf16_peak,
            "train_peak_ratio": bf16["peak_ratio"],
            "speedup_vs_fp32": bf16["images_per_second"] / train["images_per_second"],
        }
    if notes:
        out["peak_note"] = "; ".join(notes)
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# -- text output ------------------------------------------------------------------------------
def peak_line(precision: str, peak: dict[str, Any]) -> str:
    """Which kernel set the peak, and what every candidate reached."""
    candidates = ", ".join(
        f"{name} {gflops:.1f} ({peak['libraries'][name]})"
        for name, gflops in peak["gflops"].items()
    )
    return (
        f"{precision} peak {peak['peak_gflops']:.1f} GFLOP/s: {peak['kernel']} "
        f"({peak['library']}) | candidates, GFLOP/s: {candidates}"
    )


def ratio_text(ratio: float | None, precision: str) -> str:
    if ratio is None:
        return f"ABOVE the {precision} peak: the peak measurement is wrong"
    return f"{ratio:.2f} of the {precision} peak"


def print_case(result: dict[str, Any]) -> None:
    print(f"{result['case']:9s} {result['image']:10s}", flush=True)
    bf16 = result.get("bf16")
    rows = [("train", "fp32", result["batch_size"], result, "")]
    if bf16 is not None:
        speedup = f" | {bf16['speedup_vs_fp32']:.2f}x fp32"
        rows.append(("train", "bf16", result["batch_size"], bf16, speedup))
    rows.append(("score", "fp32", result["score_batch_size"], result, ""))
    for kind, precision, batch, figures, suffix in rows:
        print(
            f"  {kind} {precision} batch {batch:3d}: "
            f"{figures[f'{kind}_images_per_second']:8.1f} img/s median "
            f"(min {figures[f'{kind}_images_per_second_min']:.1f}) | "
            f"{result[f'{kind}_mflop_per_image']:.1f} MFLOP/img | "
            f"{figures[f'{kind}_gflops']:.1f} GFLOP/s = "
            f"{ratio_text(figures[f'{kind}_peak_ratio'], precision)}{suffix}",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: all cores)"
    )
    parser.add_argument(
        "--omp-wait-policy",
        choices=("PASSIVE", "ACTIVE"),
        help="default: unset, with ganomaly's short GOMP_SPINCOUNT",
    )
    parser.add_argument("--windows", type=int, default=7, help="timed windows (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed windows first")
    parser.add_argument("--window-images", type=int, default=512, help="training images per window")
    parser.add_argument("--train-steps", type=int, default=0, help="steps per window (overrides)")
    parser.add_argument("--score-batches", type=int, default=4, help="scoring batches per window")
    parser.add_argument("--peak-repeats", type=int, default=5, help="timed windows per kernel")
    parser.add_argument("--json", action="store_true", help="print one JSON object (one case)")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    names = (
        [args.case]
        if args.case != "all"
        else ([*CPU_CASES, "gpu256"] if device.type == "cuda" else list(CPU_CASES))
    )
    if args.json and len(names) != 1:
        parser.error("--json needs one --case")

    # bf16 only where the hardware computes in it: emulated bf16 would measure nothing useful
    precisions = ["fp32", "bf16"] if native_bf16(device) else ["fp32"]
    peaks = {
        precision: measure_peak(device, precision, args.peak_repeats) for precision in precisions
    }
    header = {
        "device": str(device),
        "processor": device_description(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", ""),
        "cpu_count": os.cpu_count(),
        "matmul_peak_gflops": peaks["fp32"]["peak_gflops"],  # the fp32 peak, whatever kernel
        "peak_kernels": peaks,
    }
    if not args.json:
        print(
            f"device {header['processor']} | torch {header['torch']} | "
            f"threads {header['threads']} | "
            f"OMP_WAIT_POLICY={header['omp_wait_policy']} "
            f"GOMP_SPINCOUNT={header['gomp_spincount']}"
        )
        for precision, peak in peaks.items():
            print(peak_line(precision, peak))
        if len(precisions) == 1:
            print("bf16: not native on this device (no AVX512-BF16 / AMX / bf16 GPU): not measured")
    results = []
    for name in names:
        result = summarize(measure_case(CASES[name], device, args, precisions), peaks)
        results.append(result)
        if not args.json:
            print_case(result)
            if "peak_note" in result:
                print(f"  {result['peak_note']}")
    rss = peak_rss_mb()
    if args.json:
        print(json.dumps({**header, **results[0], "peak_rss_mb": rss}, indent=1))
    else:
        print(f"peak RSS {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
