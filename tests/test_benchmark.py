"""`ganomaly benchmark`: a CI-sized grid, run twice; the cells that last (re-used from the
results folder alone, stale ones recognised), the tables and the baselines; the autoencoder
baseline's training step, which never runs the discriminator."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

import ganomaly
from ganomaly import hardware
from ganomaly.benchmark import canonical_settings, markdown, parse_classes
from ganomaly.cli import main
from ganomaly.config import ConfigError, DetectorConfig
from ganomaly.model import build_networks
from ganomaly.training import (
    TrainState,
    discriminator_trains,
    make_optimizers,
    run_epoch,
    train_step,
)

GRID = [
    "benchmark", "--data", "digits", "--protocol", "normal-class", "--classes", "0,1",
    "--seeds", "0,1", "--epochs", "1", "--ngf", "8", "--nz", "16", "--image-size", "16",
    "--no-progress",
]  # fmt: skip
TABLES = ("results.md", "results.csv", "results.json")
METHODS = ("ganomaly", "autoencoder", "raw-pixel")  # the default --methods


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(out, results) of the grid, run once."""
    root = tmp_path_factory.mktemp("bench")
    out, results = root / "out", root / "results"
    assert main([*GRID, "--out", str(out), "--results", str(results)]) == 0
    return out, results


def cells_of(results: Path) -> list[Path]:
    return sorted(results.glob("cells/*/*/seed*.json"))


def cell(results: Path, method: str, name: str, seed: int) -> dict[str, Any]:
    (path,) = results.glob(f"cells/{method}/{name}/seed{seed}-*.json")
    return dict(json.loads(path.read_text()))


def test_second_run_reuses_every_cell_from_the_results_folder_alone(bench, capsys):
    out, results = bench
    assert (out / "runs" / "ganomaly" / "0").is_dir()  # the bulky run directories are in --out
    first = {name: (results / name).read_text() for name in TABLES}
    paths = cells_of(results)
    assert len(paths) == 3 * 2 * 2  # methods x classes x seeds
    stamps = [p.stat().st_mtime_ns for p in paths]
    shutil.rmtree(out)
    capsys.readouterr()
    assert main([*GRID, "--out", str(out), "--results", str(results)]) == 0
    assert capsys.readouterr().err.count("done before, kept") == 12
    assert not (out / "runs").exists()  # nothing trained
    assert [p.stat().st_mtime_ns for p in cells_of(results)] == stamps
    assert {name: (results / name).read_text() for name in TABLES} == first


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_cells_hold_no_machine_path_and_record_what_made_them(bench):
    out, results = bench
    root = str(out.parent)
    for path in [*cells_of(results), results / "results.json"]:
        text = path.read_text()
        assert root not in text and str(Path.home()) not in text, path
        assert not [s for s in _strings(json.loads(text)) if s.startswith("/")], path
    record = cell(results, "ganomaly", "1", 0)
    assert record["method"] == "ganomaly" and record["class"] == "1" and record["seed"] == 0
    assert record["data"]["name"] == "digits" and len(record["data"]["fingerprint"]) == 64
    assert "out" not in record["settings"] and "data_dir" not in record["settings"]
    assert record["settings"]["epochs"] == 1 and record["settings"]["w_con"] == 50.0
    assert set(record["code"]["files"]) >= {
        "ganomaly/model.py", "ganomaly/losses.py", "ganomaly/training.py",
        "ganomaly/data/protocols.py",
    }  # fmt: skip
    source = Path(ganomaly.__file__).parent / "training.py"
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["code"]["files"]["ganomaly/training.py"] == expected
    assert record["versions"]["ganomaly"] == ganomaly.__version__
    assert record["metrics"]["auroc"] is not None and record["seconds"] > 0
    # Its timings name the CPU they were measured on.
    assert record["device"] == f"cpu ({hardware.cpu_model()})" and record["device"] != "cpu ()"
    # The autoencoder cell trained with its own settings, and never re-initialised a D.
    autoencoder = cell(results, "autoencoder", "1", 0)
    assert autoencoder["settings"]["w_adv"] == 0.0 and autoencoder["settings"]["w_enc"] == 0.0
    assert autoencoder["metrics"]["d_reinits"] == 0


def _stale_copy(results: Path, target: Path) -> Path:
    """A copy of the results whose ganomaly class-0 seed-0 cell claims other training code."""
    shutil.copytree(results, target)
    (path,) = target.glob("cells/ganomaly/0/seed0-*.json")
    record = json.loads(path.read_text())
    record["code"]["files"]["ganomaly/training.py"] = "0" * 64
    record["code"]["fingerprint"] = "1" * 64
    path.write_text(json.dumps(record, indent=1))
    return path


def test_a_cell_made_by_other_code_is_reused_with_a_warning(bench, tmp_path, capsys):
    _, results = bench
    stale = _stale_copy(results, tmp_path / "results")
    before = stale.read_text()
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"1 of 12 cells were made by other code \(differs in "
                      r"ganomaly/training\.py\); re-used"):  # fmt: skip
        assert (
            main([*GRID, "--out", str(tmp_path / "out"), "--results", str(stale.parents[3])]) == 0
        )
    assert capsys.readouterr().err.count("done before, kept") == 12
    assert stale.read_text() == before
    assert "1 cells were made by other code" in (tmp_path / "results" / "results.md").read_text()


def test_rerun_stale_runs_that_cell_again(bench, tmp_path, capsys):
    _, results = bench
    stale = _stale_copy(results, tmp_path / "results")
    original = cell(results, "ganomaly", "0", 0)
    capsys.readouterr()
    args = ["--out", str(tmp_path / "out"), "--results", str(tmp_path / "results")]
    assert main([*GRID, *args, "--rerun-stale"]) == 0
    assert capsys.readouterr().err.count("done before, kept") == 11
    redone = json.loads(stale.read_text())
    assert redone["code"] == original["code"]  # made by this code now
    assert (tmp_path / "out" / "runs" / "ganomaly" / "0").is_dir()
    # Same code, same seed, on the CPU: the same numbers.
    assert redone["metrics"]["auroc"] == pytest.approx(original["metrics"]["auroc"], abs=1e-9)


def _as_older_version_wrote_it(results: Path, target: Path) -> Path:
    """A copy of the results whose ganomaly class-0 seed-0 cell records its settings as the
    previous version did (the threshold rules as given, a tensorboard flag, the device without
    the CPU's model) under another file name, and claims other training code."""
    path = _stale_copy(results, target)
    record = json.loads(path.read_text())
    settings = record["settings"]
    assert settings["threshold_quantile"] == 0.99 and "tensorboard" not in settings
    settings.update(threshold_quantile=None, contamination=None, tensorboard=False)
    record["device"] = "cpu"  # without the CPU's model
    path.unlink()
    older = path.with_name("seed0-0123456789abcdef.json")
    older.write_text(json.dumps(record, indent=1))
    return older


def test_a_cell_recorded_by_an_older_version_is_found_by_what_it_records(bench, tmp_path, capsys):
    _, results = bench
    older = _as_older_version_wrote_it(results, tmp_path / "results")
    capsys.readouterr()
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="1 of 12 cells were made by other code"):
        assert main([*GRID, "--out", str(out), "--results", str(tmp_path / "results")]) == 0
    assert capsys.readouterr().err.count("done before, kept") == 12
    assert not (out / "runs").exists()  # nothing trained
    compute = (tmp_path / "results" / "results.md").read_text().split("Compute, all cells:")[1]
    assert f"on cpu ({hardware.cpu_model()}), cpu (model not recorded)." in compute
    # Re-run as stale, the new cell replaces the old one: one cell per (method, class, seed).
    assert main([*GRID, "--out", str(out), "--results", str(tmp_path / "results"),
                 "--rerun-stale"]) == 0  # fmt: skip
    (redone,) = older.parent.glob("seed0-*.json")
    assert redone != older and "tensorboard" not in json.loads(redone.read_text())["settings"]


def test_tables_only_tabulates_the_cells_found_and_runs_nothing(bench, tmp_path, capsys):
    _, results = bench
    shutil.copytree(results, tmp_path / "results")
    (missing,) = (tmp_path / "results").glob("cells/autoencoder/1/seed1-*.json")
    missing.unlink()
    expected = cell(results, "autoencoder", "1", 0)["metrics"]["auroc"]
    capsys.readouterr()
    assert main([*GRID, "--results", str(tmp_path / "results"), "--tables-only"]) == 0
    err = capsys.readouterr().err
    assert err.count("done before, kept") == 11 and err.count("not run yet") == 1
    assert not (tmp_path / "results" / "runs").exists()  # nothing trained
    assert not (tmp_path / "results" / "benchmark.yaml").exists()
    summary = json.loads((tmp_path / "results" / "results.json").read_text())
    assert summary["missing_cells"] == 1
    row = summary["table"]["autoencoder"]["auroc"]
    assert row["1"]["values"] == [expected, None] and row["1"]["n"] == 1
    assert row["mean"]["values"][1] is None  # seed 1 lacks a class: no class mean
    text = (tmp_path / "results" / "results.md").read_text()
    assert "**Incomplete: 1 of 12 cells not run yet**" in text
    assert f"| {expected:.3f} (1 seed) |" in text  # the AUROC table, class 1
    assert f"{expected:.3f} / —" in text  # the per-seed table
    assert f"on cpu ({hardware.cpu_model()})." in text  # the CPU beside the compute time
    # Nothing to tabulate, or nowhere to look: a one-line error.
    empty = ["--results", str(tmp_path / "empty"), "--tables-only"]
    assert main([*GRID, *empty]) == 2
    assert "no finished cell of this grid" in capsys.readouterr().err
    assert main([*GRID, "--tables-only"]) == 2
    assert "--tables-only: give --results" in capsys.readouterr().err
    assert main([*GRID, *empty, "--rerun-stale"]) == 2
    assert "--tables-only runs nothing: drop --rerun-stale" in capsys.readouterr().err


def test_settings_are_compared_in_one_form():
    current = {"epochs": 15, "threshold": None, "threshold_quantile": None,
               "contamination": None, "precision": "fp32"}  # fmt: skip
    same = [
        {"epochs": 15, "threshold": None, "threshold_quantile": 0.99},  # before --precision
        {**current, "contamination": 0.01, "tensorboard": True},  # 1 - 0.01 is the quantile
    ]
    for settings in same:
        assert canonical_settings(settings) == canonical_settings(current), settings
    different = [
        {**current, "precision": "bf16"},
        {**current, "threshold_quantile": 0.95},
        {**current, "threshold": 0.5},
        {**current, "epochs": 14},
    ]
    for settings in different:
        assert canonical_settings(settings) != canonical_settings(current), settings


def test_a_stale_cell_run_again_trains_afresh_not_from_its_checkpoints(tmp_path, capsys):
    # The stale cell's run directory still holds the final checkpoint of the other code's
    # training: continuing from it would only re-evaluate that model under a new code record.
    one = [*GRID, "--classes", "0", "--seeds", "0", "--methods", "ganomaly", "--threads", "2"]
    args = ["--out", str(tmp_path / "out"), "--results", str(tmp_path / "results")]
    threads = torch.get_num_threads()  # 1 in the tests (conftest)
    assert main([*one, *args]) == 0
    (path,) = (tmp_path / "results").glob("cells/ganomaly/0/seed0-*.json")
    record = json.loads(path.read_text())
    # It records the thread count it trained with, which --threads set for the cell alone.
    assert record["threads"] == 2 and torch.get_num_threads() == threads
    record["code"]["files"]["ganomaly/training.py"] = "0" * 64
    path.write_text(json.dumps(record))
    assert list((tmp_path / "out" / "runs" / "ganomaly" / "0").glob("*/checkpoints/*.pt"))
    capsys.readouterr()
    assert main([*one, *args, "--rerun-stale"]) == 0
    err = capsys.readouterr().err
    assert "continuing from" not in err and "epoch 1/1" in err  # trained again
    assert json.loads(path.read_text())["code"]["files"]["ganomaly/training.py"] != "0" * 64


def test_table_is_mean_std_and_spread_of_the_cells(bench):
    _, results = bench
    summary = json.loads((results / "results.json").read_text())
    rows = {
        (r["method"], r["metric"], r["class"]): r
        for r in csv.DictReader((results / "results.csv").open())
    }
    for method in METHODS:
        per_class = {
            name: [cell(results, method, name, s)["metrics"]["auroc"] for s in (0, 1)]
            for name in ("0", "1")
        }
        for name, values in per_class.items():
            row = rows[(method, "auroc", name)]
            # The CSV rounds to 6 decimals.
            assert float(row["mean"]) == pytest.approx(np.mean(values), abs=1e-6)
            assert float(row["std"]) == pytest.approx(np.std(values), abs=1e-6)
            assert float(row["min"]) == pytest.approx(min(values), abs=1e-6)
            assert float(row["max"]) == pytest.approx(max(values), abs=1e-6)
            assert [float(row["seed0"]), float(row["seed1"])] == pytest.approx(values, abs=1e-6)
            assert row["n_seeds"] == "2"
            assert summary["table"][method]["auroc"][name]["values"] == values
        seed_means = [np.mean([per_class["0"][k], per_class["1"][k]]) for k in (0, 1)]
        assert summary["table"][method]["auroc"]["mean"]["mean"] == pytest.approx(
            np.mean(seed_means)
        )
    text = (results / "results.md").read_text()
    assert "| **mean** |" in text and "GANomaly" in text and "raw pixels" in text
    assert "## AUROC per seed (seed 0 / seed 1)" in text
    data = cell(results, "raw-pixel", "0", 0)["data"]
    assert f"{data['source']} (fingerprint {data['fingerprint'][:12]}…)" in text
    assert "split seed 0;" in text
    # "auto" is stated as what it resolved to on this machine's CPU
    assert re.search(r"precision (fp32|bf16)\.", text) and "precision auto" not in text
    assert (results / "results.png").stat().st_size > 5_000


def test_the_header_states_the_precision_where_the_config_has_that_setting(bench):
    summary = json.loads((bench[1] / "results.json").read_text())
    summary["settings"].pop("precision", None)
    assert "precision" not in markdown(summary)
    summary["settings"]["precision"] = "bf16"
    assert markdown(summary).splitlines()[2].endswith("batch 64, precision bf16.")


def test_raw_pixel_baseline_is_the_distance_to_the_mean_normal_image(bench):
    # Worked out independently of the library on the 8x8 images themselves: the ranking of
    # squared distances to the mean normal image is close to the one at the model's 16x16
    # (a bilinear upsampling), so the AUROC must agree to within a few hundredths.
    _, results = bench
    digits = load_digits()
    images, labels = digits.images / 16.0, digits.target
    raw = cell(results, "raw-pixel", "0", 0)
    mean = images[labels == 0].mean(0)
    scores = ((images - mean) ** 2).mean((1, 2))
    expected = roc_auc_score(labels != 0, scores)
    assert raw["metrics"]["auroc"] == pytest.approx(expected, abs=0.03)
    assert raw["metrics"]["auroc"] > 0.9


def test_paired_split_seeds_key_cells_on_the_settings_not_the_command(tmp_path, capsys):
    paper = [
        "benchmark", "--data", "digits", "--protocol", "paper", "--classes", "3",
        "--methods", "raw-pixel", "--image-size", "16", "--no-progress",
        "--results", str(tmp_path / "results"),
    ]  # fmt: skip
    assert main([*paper, "--seeds", "0,1", "--pair-split-seed", "--out", str(tmp_path / "a")]) == 0
    paired = [cell(tmp_path / "results", "raw-pixel", "3", s) for s in (0, 1)]
    assert [c["settings"]["split_seed"] for c in paired] == [0, 1]
    # The split changed with the seed (raw pixels have no other randomness).
    assert paired[0]["metrics"]["auroc"] != paired[1]["metrics"]["auroc"]
    assert "split seed = seed (paired" in (tmp_path / "results" / "results.md").read_text()
    # Seed 1 with split seed 1, asked for without pairing, is the same cell.
    capsys.readouterr()
    args = ["--seeds", "1", "--split-seed", "1", "--out", str(tmp_path / "b")]
    assert main([*paper, *args]) == 0
    assert capsys.readouterr().err.count("done before, kept") == 1
    assert main([*paper, *args, "--pair-split-seed"]) == 2
    assert "--pair-split-seed sets each cell's split seed" in capsys.readouterr().err


def test_class_lists_and_bad_flags(tmp_path, capsys):
    assert parse_classes("0-3,7", "normal-class") == ["0", "1", "2", "3", "7"]
    assert parse_classes("bottle,grid", "mvtec") == ["bottle", "grid"]
    with pytest.raises(ConfigError, match="a range is written like 0-9"):
        parse_classes("5-2", "paper")
    out = str(tmp_path / "b")
    assert main([*GRID, "--methods", "ganomaly,svm", "--out", out]) == 2
    assert "--methods 'ganomaly,svm'" in capsys.readouterr().err
    assert main([*GRID, "--model", "skip-ganomaly", "--out", out]) == 2
    assert "--methods choose the models" in capsys.readouterr().err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    assert main([*GRID, "--out", out, "--results", str(tmp_path / "notes")]) == 2
    assert "holds files but is not a benchmark folder" in capsys.readouterr().err


# -- the autoencoder baseline's step: G alone, D never runs ----------------------------------


def _state(model: str, **settings: Any) -> TrainState:
    config = DetectorConfig(  # fp32: compared below with a float32 computation
        model=model, image_size="16", nz=8, ngf=4, batch_size=4, progress=False,
        precision="fp32", **settings,
    )  # fmt: skip
    generator, discriminator = build_networks(model, (16, 16), 1, 8, 4, 0, seed=0)
    return TrainState(
        generator, discriminator, *make_optimizers(generator, discriminator, config), config
    )


def test_discriminator_trains_only_where_it_can_change_a_result():
    def trains(model: str, **settings: Any) -> bool:
        return discriminator_trains(DetectorConfig(model=model, **settings))

    assert trains("ganomaly") and trains("ganomaly", w_enc=0.0)
    assert not trains("ganomaly", w_adv=0.0) and not trains("ganomaly", w_adv=0.0, w_enc=0.0)
    assert trains("skip-ganomaly") and trains("skip-ganomaly", w_adv=0.0)  # L_lat reads D
    assert trains("skip-ganomaly", w_adv=0.0, w_lat=0.0)  # the score reads D (lambda 0.9)
    assert not trains("skip-ganomaly", w_adv=0.0, w_lat=0.0, score_lambda=1.0)


@pytest.mark.parametrize(
    "model, settings",
    [
        ("ganomaly", {"w_adv": 0.0, "w_enc": 0.0}),  # the autoencoder baseline
        ("skip-ganomaly", {"w_adv": 0.0, "w_lat": 0.0, "score_lambda": 1.0}),
    ],
)
def test_without_a_use_for_d_the_step_never_runs_it(model, settings):
    state = _state(model, **settings)
    d_before = copy.deepcopy(state.discriminator.state_dict())
    expected_g = copy.deepcopy(state.generator)
    calls = []  # every layer of D, however it is reached (forward, features, classify)
    for module in state.discriminator.modules():
        module.register_forward_pre_hook(lambda module, args: calls.append(module))
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1

    losses = train_step(state, x)

    assert calls == [] and not any(state.optimizer_d.state.values())
    after = state.discriminator.state_dict()
    assert all(torch.equal(after[k], v) for k, v in d_before.items())  # BN statistics too
    assert losses["l_d"].item() == 0.0 and losses["l_adv"].item() == 0.0
    # G's update is a plain autoencoder step on w_con * L1 (+ w_enc * latent), written out
    # here without losses.py.
    output = expected_g(x)
    x_hat = output if model == "skip-ganomaly" else output[0]
    l_con = (x_hat - x).abs().mean()
    assert losses["l_con"].item() == pytest.approx(l_con.item(), rel=1e-6)
    (state.config.setting("w_con") * l_con).backward()
    torch.optim.Adam(expected_g.parameters(), lr=2e-4, betas=(0.5, 0.999)).step()
    for (name, param), expected in zip(
        state.generator.named_parameters(), expected_g.parameters(), strict=True
    ):
        assert torch.allclose(param, expected, atol=1e-7), name


def test_an_untrained_d_is_never_reinitialised():
    # L_D is recorded as 0, below the re-init threshold: the rule must not fire for a D
    # that never trains.
    state = _state("ganomaly", w_adv=0.0, w_enc=0.0)
    d_before = copy.deepcopy(state.discriminator.state_dict())
    row = run_epoch(state, torch.rand(12, 1, 16, 16) * 2 - 1, batch_size=4, progress=False)
    assert row["d_reinits"] == 0 and state.d_reinits == 0 and row["l_d"] == 0.0
    after = state.discriminator.state_dict()
    assert all(torch.equal(after[k], v) for k, v in d_before.items())


def test_a_cell_stopped_after_a_checkpoint_continues_from_it(tmp_path, capsys):
    """A cell whose run has checkpoints but no cell file (the process was stopped) resumes
    from its last checkpoint, to the numbers an uninterrupted run gives."""
    grid = [*GRID, "--classes", "0", "--seeds", "0", "--methods", "ganomaly", "--epochs", "2"]
    args = ["--out", str(tmp_path / "out"), "--results", str(tmp_path / "results")]
    assert main([*grid, *args]) == 0
    whole = cell(tmp_path / "results", "ganomaly", "0", 0)
    (run_dir,) = (tmp_path / "out" / "runs" / "ganomaly" / "0").iterdir()
    checkpoints = sorted((run_dir / "checkpoints").glob("epoch-*.pt"))
    assert len(checkpoints) == 2
    checkpoints[-1].unlink()  # stopped during epoch 2: only epoch 1's checkpoint is left
    next((tmp_path / "results").glob("cells/ganomaly/0/*.json")).unlink()
    capsys.readouterr()
    assert main([*grid, *args]) == 0
    assert f"continuing from {checkpoints[0].name}" in capsys.readouterr().err
    resumed = cell(tmp_path / "results", "ganomaly", "0", 0)
    assert resumed["metrics"]["auroc"] == pytest.approx(whole["metrics"]["auroc"], abs=1e-9)
    assert resumed["metrics"]["threshold"] == pytest.approx(whole["metrics"]["threshold"])
