"""`torchrun -m ganomaly train` with 2 CPU processes (gloo, loopback only).

The tests launch torchrun on this very file: run as a script, it is a thin launcher around
the real CLI (`ganomaly.cli.main`) that watches what each rank does without any test hook in
the library itself:

- it wraps `ganomaly.detector.train` so every rank saves its final networks (and its count of
  D re-inits) to $GANOMALY_TEST_DUMP, so rank 1's weights can be compared with rank 0's;
- a Python audit hook records every file each rank opens for writing, creates, renames or
  deletes, so "only rank 0 writes" is checked on what the processes did, not on file names.

`python tests/test_distributed.py reinit DIR` instead runs the D re-init rule alone, with the
ranks' random generators deliberately out of step.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests._trained import EVERY_MODEL

DUMP_ENV = "GANOMALY_TEST_DUMP"
RUN_FILES = {"checkpoints", "config.yaml", "data.json", "figures", "history.csv", "metrics.json"}
RUN_FILES |= {"model.pt", "report.html", "scores.csv"}
FIGURES = {"loss_curves.png", "restoration.png", "score_boxplot.png", "score_histogram.png"}
FIGURES |= {"roc.png", "pr.png", "outcomes.png"}
# ln 2 is GANomaly's L_D of a discriminator that cannot tell real from fake (logits 0): a
# freshly re-initialised D sits right at it, so some steps fall below it and some do not. The
# two ranks' own L_D straddle it often, so a rule applied to each rank's own loss instead of
# the all-reduced mean would make their discriminators differ. Skip-GANomaly's L_D sums the two
# BCE terms (2 ln 2 = 1.386 at chance) and adds its latent term (about 0.015 here).
REINIT_THRESHOLD = {"ganomaly": "0.6931", "skip-ganomaly": "1.4"}
ARGS = [
    "--data", "digits", "--normal-class", "0", "--ngf", "8", "--nz", "16", "--image-size", "16",
    "--epochs", "2", "--batch-size", "8", "--seed", "4", "--no-progress",
]  # fmt: skip
TIMEOUT_S = 120


# -- the launcher (this file run by torchrun) ----------------------------------------------
def _record_writes(log: Path, ignore: tuple[Path, ...]) -> None:
    """Record this process's file writes (Python-level), except under `ignore`, and save them
    to `log` at exit."""
    import atexit

    writes: list[str] = []
    recording = [True]
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if not recording[0]:
            return
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else False
            if not (writing or (isinstance(flags, int) and flags & write_flags)):
                return
        elif event == "os.rename":  # also os.replace: the destination is what appears
            path = args[1]
        elif event in ("os.mkdir", "os.remove", "os.rmdir"):
            path = args[0]
        else:
            return
        if isinstance(path, int):  # an already-open descriptor, e.g. os.fdopen
            return
        text = os.path.abspath(os.fsdecode(path))
        if not text.startswith(tuple(str(folder) for folder in ignore)):
            writes.append(f"{event} {text}")

    def save() -> None:
        recording[0] = False
        log.write_text(json.dumps(writes))

    sys.addaudithook(hook)
    atexit.register(save)


def _launch_cli(argv: list[str]) -> int:
    dump = Path(os.environ[DUMP_ENV]).resolve()
    rank = os.environ["RANK"]
    # Every process, whatever its rank, probes the temporary directory (the tempfile module)
    # and creates torch's inductor cache directory in it: scratch space, not the run's output.
    scratch = Path(os.environ["TMPDIR"]).resolve()
    _record_writes(dump / f"writes-rank{rank}.json", ignore=(dump, scratch))
    import ganomaly.detector
    from ganomaly.cli import main

    real_train = ganomaly.detector.train

    def train_and_dump(state: Any, *args: Any, **kwargs: Any) -> Any:
        history = real_train(state, *args, **kwargs)
        dumped: dict[str, Any] = {"parameters": {}, "buffers": {}, "d_reinits": state.d_reinits}
        for prefix, module in (("g", state.generator), ("d", state.discriminator)):
            for name, tensor in module.named_parameters():
                dumped["parameters"][f"{prefix}.{name}"] = tensor.detach().cpu()
            for name, tensor in module.named_buffers():
                dumped["buffers"][f"{prefix}.{name}"] = tensor.cpu()
        torch.save(dumped, dump / f"rank{rank}.pt")
        return history

    ganomaly.detector.train = train_and_dump  # type: ignore[assignment]
    return main(argv)


def _reinit_worker(out: Path) -> int:
    """Rank 0's L_D is below the threshold, rank 1's is not, their mean is: both must re-init,
    to the same weights, although their random generators differ."""
    from ganomaly import distributed
    from ganomaly.config import DetectorConfig
    from ganomaly.model import make_networks
    from ganomaly.training import (
        LOSS_TERMS,
        TrainState,
        loss_values,
        make_optimizers,
        maybe_reinit_discriminator,
        use_channels_last,
    )

    distributed.setup("cpu")
    rank = distributed.rank()
    config = DetectorConfig(image_size="16", nz=8, ngf=4, d_reinit_threshold=0.5)
    generator, discriminator = make_networks((16, 16), 1, 8, 4, 0, seed=0)
    optimizers = make_optimizers(generator, discriminator, config)
    state = TrainState(generator, discriminator, *optimizers, config)
    use_channels_last(state)  # as in training: the broadcast must handle NHWC weights
    before = {n: t.clone() for n, t in discriminator.state_dict().items()}
    torch.manual_seed(100 + rank)  # only a broadcast can make the ranks' new weights agree
    own_l_d = 0.2 if rank == 0 else 0.7
    losses = loss_values({name: torch.tensor(own_l_d) for name in LOSS_TERMS})
    reinit = maybe_reinit_discriminator(state, losses["l_d"])
    after = discriminator.state_dict()
    torch.save({"l_d": losses["l_d"], "reinit": reinit, "before": before, "after": after},
               out / f"rank{rank}.pt")  # fmt: skip
    distributed.teardown()
    return 0


# -- the tests ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun(
    args: list[str], cwd: Path, dump: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Two processes on this machine; the store and gloo both stay on the loopback interface."""
    # this file runs as each rank's script, from `cwd`: the repository root makes `tests` importable
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {
        **os.environ, **(env or {}), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
        DUMP_ENV: str(dump), "PYTHONPATH": path,
    }  # fmt: skip
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), __file__, *args,
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, model_name: str) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ddp")
    cwd, dump, out = root / "cwd", root / "dump", root / "run"
    for folder in (cwd, dump, root / "tmp", root / "home"):
        folder.mkdir()
    private = {  # scratch and cache folders (matplotlib's, torch inductor's) kept apart
        "TMPDIR": str(root / "tmp"),
        "HOME": str(root / "home"),
        "TORCHINDUCTOR_CACHE_DIR": str(root / "tmp" / "inductor"),
    }
    model = ["--model", model_name, "--d-reinit-threshold", REINIT_THRESHOLD[model_name]]
    result = torchrun(["train", *ARGS, *model, "--out", str(out)], cwd, dump, private)
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    writes = [json.loads((dump / f"writes-rank{r}.json").read_text()) for r in (0, 1)]
    log = result.stdout + result.stderr
    return {"cwd": cwd, "dump": dump, "out": out, "ranks": ranks, "writes": writes, "log": log}


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs between the ranks"


@EVERY_MODEL
def test_both_ranks_end_with_bit_identical_weights(
    ddp_run: dict[str, Any], model_name: str
) -> None:
    rank0, rank1 = ddp_run["ranks"]
    assert_identical(rank0["parameters"], rank1["parameters"])
    # G's BatchNorm statistics are recomputed on the same images by every rank (precise BN),
    # so they agree too, and so do D's where the score reads D (skip-ganomaly). GANomaly's D
    # keeps its own per rank on CPU (no SyncBatchNorm): they must differ, or the ranks did not
    # train on different shards.
    recomputed = ("g.", "d.") if model_name == "skip-ganomaly" else ("g.",)
    buffers0, buffers1 = rank0["buffers"], rank1["buffers"]
    assert_identical(
        *({n: t for n, t in b.items() if n.startswith(recomputed)} for b in (buffers0, buffers1))
    )
    if model_name == "ganomaly":
        assert any(not torch.equal(buffers0[n], buffers1[n]) for n in buffers0 if n[0] == "d")


@EVERY_MODEL
def test_discriminator_reinits_happened_and_ranks_agree(ddp_run: dict[str, Any]) -> None:
    rank0, rank1 = ddp_run["ranks"]
    metrics = json.loads((ddp_run["out"] / "metrics.json").read_text())
    history = (ddp_run["out"] / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("d_reinits")
    per_epoch = [float(row.split(",")[column]) for row in history[1:]]
    steps = 2 * ((142 - 14) // 2 // 8)  # digits class 0: 142 images, 14 held out, 2 ranks
    assert 0 < metrics["d_reinits"] == sum(per_epoch) == rank0["d_reinits"] == rank1["d_reinits"]
    assert metrics["d_reinits"] < steps, "every step re-initialised D: the threshold tests nothing"


@EVERY_MODEL
def test_only_rank_0_writes_and_logs(ddp_run: dict[str, Any]) -> None:
    rank0_writes, rank1_writes = ddp_run["writes"]
    assert rank1_writes == []
    assert any(w.endswith(f" {ddp_run['out'] / 'model.pt'}") for w in rank0_writes)  # it sees
    assert list(ddp_run["cwd"].iterdir()) == []
    assert sorted(p.name for p in ddp_run["dump"].iterdir()) == [
        "rank0.pt", "rank1.pt", "writes-rank0.json", "writes-rank1.json",
    ]  # fmt: skip
    assert ddp_run["log"].count("data: digits") == 1
    assert ddp_run["log"].count("AUROC") == 1


@EVERY_MODEL
def test_the_run_directory_is_complete(ddp_run: dict[str, Any]) -> None:
    out = ddp_run["out"]
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert {p.name for p in (out / "figures").iterdir()} >= FIGURES
    assert all((out / name).stat().st_size > 0 for name in RUN_FILES - {"checkpoints", "figures"})
    assert list((out / "checkpoints").glob("*.pt"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 128 and 0.5 < metrics["auroc"] <= 1.0
    # Throughput counts both ranks: 2 ranks x 8 steps x 8 images an epoch.
    history = (out / "history.csv").read_text().splitlines()
    columns = history[0].split(",")
    for line in history[1:]:
        row = dict(zip(columns, map(float, line.split(",")), strict=True))
        assert row["images_per_second"] * row["seconds"] == pytest.approx(128, rel=1e-3)


def test_sync_batchnorm_reverts_to_the_same_tensors() -> None:
    """On CUDA training runs SyncBatchNorm; afterwards the model must be plain BatchNorm2d
    again, holding the very tensors the optimizers update (no copies)."""
    from torch import nn

    from ganomaly.distributed import revert_sync_batchnorm
    from ganomaly.model import make_networks

    generator, _ = make_networks((16, 16), 1, 8, 4, 0, seed=0)
    with torch.no_grad():
        generator(torch.rand(4, 1, 16, 16))  # running statistics away from 0 / 1
    tensors = {**dict(generator.named_parameters()), **dict(generator.named_buffers())}
    nn.SyncBatchNorm.convert_sync_batchnorm(generator)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in generator.modules())
    revert_sync_batchnorm(generator)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in generator.modules())
    after = {**dict(generator.named_parameters()), **dict(generator.named_buffers())}
    assert after.keys() == tensors.keys()
    assert all(after[name] is tensor for name, tensor in tensors.items())


def test_reinit_decision_is_averaged_and_broadcast(tmp_path: Path) -> None:
    torchrun(["reinit", str(tmp_path)], tmp_path, tmp_path)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["l_d"] == rank1["l_d"] == pytest.approx(0.45)
    assert rank0["reinit"] and rank1["reinit"]
    assert_identical(rank0["after"], rank1["after"])
    first = "encoder.features.0.weight"
    assert not torch.equal(rank0["after"][first], rank0["before"][first])


if __name__ == "__main__":
    if sys.argv[1] == "reinit":
        sys.exit(_reinit_worker(Path(sys.argv[2])))
    sys.exit(_launch_cli(sys.argv[1:]))
