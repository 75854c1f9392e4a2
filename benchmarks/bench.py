"""Throughput of GANomaly training and scoring, measured against this machine's matmul peak.

One process measures, with one thread setting throughout:
    (a) the dense float32 matmul peak (GFLOP/s): best of several 2048^2 and 4096^2 torch.mm;
    (b) training throughput (images/s) of the real loop (`ganomaly.training.run_epoch`);
    (c) scoring throughput (images/s) of the real path (`ganomaly.scoring.score_tensor`);
    (d) peak resident memory;
and prints, for (b) and (c), the achieved GFLOP/s and its ratio to (a).

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
# the `ganomaly` package's default (set when it is imported, see ganomaly/__init__.py) unless
# told otherwise.
if "--omp-wait-policy" in sys.argv:
    os.environ["OMP_WAIT_POLICY"] = sys.argv[sys.argv.index("--omp-wait-policy") + 1]
import ganomaly  # noqa: E402, F401  (before torch: applies the OpenMP wait default)

# isort: split

import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from ganomaly.config import DetectorConfig  # noqa: E402
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, repeats: int) -> float:
    """Best GFLOP/s of float32 torch.mm at 2048^2 and 4096^2 (2 n^3 FLOPs each)."""
    best = 0.0
    for n in (2048, 4096):
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        out = torch.empty(n, n, device=device)
        torch.mm(a, b, out=out)  # warm-up
        sync(device)
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b, out=out)
            sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - started) / 1e9)
    return best


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
    run_once: Callable[[], int], device: torch.device, warmup: int, windows: int
) -> list[float]:
    """images/s of `windows` timed calls of run_once (which returns its image count)."""
    for _ in range(warmup):
        run_once()
    sync(device)
    rates = []
    for _ in range(windows):
        started = time.perf_counter()
        n = run_once()
        sync(device)
        rates.append(n / (time.perf_counter() - started))
    return rates


def measure_case(case: Case, device: torch.device, args: argparse.Namespace) -> dict[str, object]:
    config = DetectorConfig(
        image_size=str(case.size), channels=case.channels, batch_size=case.batch_size,
        progress=False, device=device.type, seed=0,
    )  # fmt: skip
    shape = (case.size, case.size)
    generator, discriminator = make_networks(shape, case.channels, config.nz, config.ngf, 0, 0)
    generator.to(device)
    discriminator.to(device)
    x = torch.rand(case.batch_size, case.channels, *shape, device=device) * 2 - 1
    train_flops = train_flops_per_image(generator, discriminator, x)
    score_flops = score_flops_per_image(
        generator, torch.rand(8, case.channels, *shape, device=device) * 2 - 1
    )

    optimizer_g, optimizer_d = make_optimizers(generator, discriminator, config)
    state = TrainState(generator, discriminator, optimizer_g, optimizer_d, config)
    steps = args.train_steps or max(2, round(args.window_images / case.batch_size))
    images = torch.rand(steps * case.batch_size, case.channels, *shape, device=device) * 2 - 1
    images = prepare_training(state, images)  # as `ganomaly.training.train` does

    def train_once() -> int:
        run_epoch(state, images, case.batch_size, progress=False)
        return steps * case.batch_size

    train_rates = timed_windows(train_once, device, args.warmup, args.windows)

    scorer = AnomalyScorer(generator, "l2", 1.0, 0.0, 2.0).to(device)
    score_images = (
        torch.rand(max(1, args.score_batches) * case.score_batch_size, case.channels, *shape) * 2
        - 1
    )
    if device.type == "cuda":
        score_images = score_images.pin_memory()

    def score_once() -> int:
        score_tensor(scorer, score_images, case.score_batch_size, device=device)
        return len(score_images)

    score_rates = timed_windows(score_once, device, args.warmup, args.windows)
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


def summarize(result: dict[str, object], peak: float) -> dict[str, object]:
    out = dict(result)
    for kind in ("train", "score"):
        rates = result[f"{kind}_rates"]
        assert isinstance(rates, list)
        median = statistics.median(rates)
        flops = float(result[f"{kind}_mflop_per_image"]) * 1e6  # type: ignore[arg-type]
        out[f"{kind}_images_per_second"] = median
        out[f"{kind}_images_per_second_min"] = min(rates)
        out[f"{kind}_gflops"] = median * flops / 1e9
        out[f"{kind}_peak_ratio"] = median * flops / 1e9 / peak
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


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
    parser.add_argument("--peak-repeats", type=int, default=5)
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

    peak = matmul_peak_gflops(device, args.peak_repeats)
    header = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", ""),
        "cpu_count": os.cpu_count(),
        "matmul_peak_gflops": peak,
    }
    if not args.json:
        print(
            f"device {device} | torch {header['torch']} | threads {header['threads']} | "
            f"OMP_WAIT_POLICY={header['omp_wait_policy']} "
            f"GOMP_SPINCOUNT={header['gomp_spincount']} | matmul peak {peak:.1f} GFLOP/s"
        )
    results = []
    for name in names:
        result = summarize(measure_case(CASES[name], device, args), peak)
        results.append(result)
        if not args.json:
            print(f"{result['case']:9s} {result['image']:10s}", flush=True)
            for kind, batch in (("train", "batch_size"), ("score", "score_batch_size")):
                print(
                    f"  {kind:5s} batch {result[batch]:3d}: "
                    f"{result[f'{kind}_images_per_second']:8.1f} img/s median "
                    f"(min {result[f'{kind}_images_per_second_min']:.1f}) | "
                    f"{result[f'{kind}_mflop_per_image']:.1f} MFLOP/img | "
                    f"{result[f'{kind}_gflops']:.1f} GFLOP/s = "
                    f"{result[f'{kind}_peak_ratio']:.2f} of peak",
                    flush=True,
                )
    rss = peak_rss_mb()
    if args.json:
        print(json.dumps({**header, **results[0], "peak_rss_mb": rss}, indent=1))
    else:
        print(f"peak RSS {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
