"""Does data-parallel training cost accuracy? The same config, one process vs torchrun.

    python benchmarks/ddp_quality.py                                   # digits, quick
    python benchmarks/ddp_quality.py --data mnist --normal-class 1 --epochs 15

Trains every seed once in a single process and once with `torchrun --nproc_per_node N` (CPU
processes, gloo over the loopback interface), through the real CLI, then prints the test
AUROC mean ± std of each. `--batch-size` is per process, so by default the torchrun runs take
N times fewer, N times larger steps; `--same-global-batch` divides the per-process batch by N
instead, so both take the same steps over the same global batch.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train(out: Path, args: list[str], nproc: int) -> float:
    """One `ganomaly train` run (through torchrun when nproc > 1); its test AUROC."""
    if nproc == 1:
        launcher = [sys.executable, "-m", "ganomaly"]
    else:
        launcher = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
            "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
            "--master-port", str(free_port()), "-m", "ganomaly",
        ]  # fmt: skip
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    env.setdefault("OMP_NUM_THREADS", "1")  # N processes share the cores
    command = [*launcher, "train", *args, "--no-progress", "--out", str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:  # the runs' own logs only matter when one fails
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    return float(json.loads((out / "metrics.json").read_text())["auroc"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--normal-class", default="0")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--same-global-batch", action="store_true")
    parser.add_argument(
        "--extra", default="--ngf 16 --nz 32 --image-size 16", help="more `train` flags"
    )
    options = parser.parse_args()
    common = [
        "--data", options.data, "--normal-class", options.normal_class,
        "--epochs", str(options.epochs), *options.extra.split(),
    ]  # fmt: skip
    ddp_batch = options.batch_size
    if options.same_global_batch:
        ddp_batch = max(1, options.batch_size // options.nproc)
    setups = {
        "1 process": (1, options.batch_size),
        f"torchrun x{options.nproc}": (options.nproc, ddp_batch),
    }
    print(f"{options.data} class {options.normal_class}, {options.epochs} epochs, {options.extra}")
    with tempfile.TemporaryDirectory() as root:
        for name, (nproc, batch) in setups.items():
            aurocs = []
            for seed in options.seeds:
                args = [*common, "--seed", str(seed), "--batch-size", str(batch)]
                aurocs.append(train(Path(root) / f"{nproc}-{seed}", args, nproc))
            spread = statistics.stdev(aurocs) if len(aurocs) > 1 else 0.0
            print(
                f"{name:>12}: batch {batch} x {nproc} = {batch * nproc} | AUROC "
                f"{statistics.mean(aurocs):.4f} ± {spread:.4f} over seeds {options.seeds} "
                f"({', '.join(f'{a:.4f}' for a in aurocs)})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
