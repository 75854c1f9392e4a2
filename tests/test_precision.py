"""`--precision auto|fp32|bf16`: the setting, the hardware detection behind `auto`, the bf16
training step (run on any CPU: where bf16 is not native it is emulated, correct and slower),
float32 scoring whatever the training precision, and the precision recorded in the model."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ganomaly import GANomalyDetector, hardware
from ganomaly.cli import build_config, build_parser, main
from ganomaly.config import ConfigError, DetectorConfig
from ganomaly.model import make_networks
from ganomaly.training import TrainState, make_optimizers, train_step, use_channels_last
from tests._trained import TINY

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
# bf16 runs on every CPU; on those without native bf16 it warns that it is slow.
pytestmark = pytest.mark.filterwarnings("ignore:--precision bf16 on a cpu without native")


# -- the setting ------------------------------------------------------------------------------
def test_precision_flag_parses_into_the_config() -> None:
    args = build_parser().parse_args(["train", "--data", "digits", "--precision", "bf16"])
    assert build_config(args).precision == "bf16"
    args = build_parser().parse_args(["train", "--data", "digits"])
    assert build_config(args).precision == "auto"


def test_unknown_precision_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "digits", "--precision", "fp16", "--out", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    # the same check for YAML configs and the Python API, which bypass argparse
    with pytest.raises(ConfigError, match=r"^--precision 'fp16': choose one of auto, fp32, bf16$"):
        DetectorConfig(precision="fp16").validate()
    with pytest.raises(ValueError, match="choose one of auto, fp32, bf16"):
        hardware.resolve_precision("fp16", CPU)


def test_precision_is_an_estimator_parameter() -> None:
    assert GANomalyDetector().get_params()["precision"] == "auto"
    assert GANomalyDetector(precision="bf16").get_params()["precision"] == "bf16"


# -- detection and resolution -----------------------------------------------------------------
@pytest.fixture
def fresh_cpu_detection() -> Iterator[None]:
    hardware._cpu_has_native_bf16.cache_clear()
    yield
    hardware._cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse2 avx2 avx512f avx512bw", False),  # AVX-512 alone converts, does not compute
        ("fpu avx2 avx512f avx512_bf16", True),  # e.g. Cooper Lake, Zen 4
        ("fpu avx2 avx512f amx_tile amx_bf16 amx_int8", True),  # e.g. Sapphire Rapids
        ("fpu avx2 amx_tile amx_int8", False),
    ],
)
def test_cpu_bf16_is_read_from_the_cpu_flags(
    flags: str,
    native: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_cpu_detection: None,
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "".join(f"processor\t: {n}\nvendor_id\t: Any\nflags\t\t: {flags}\n\n" for n in range(2))
    )
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)
    assert hardware.native_bf16(CPU) is native


def test_cpu_bf16_without_cpuinfo_asks_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_cpu_detection: None
) -> None:
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "missing")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert hardware.native_bf16(CPU) is False
    hardware._cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert hardware.native_bf16(CPU) is True


def test_the_cpu_model_is_read_from_cpuinfo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC 9R14 96-Core Processor\nflags\t\t: fpu\n\n"
    )
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)
    assert hardware.cpu_model() == "AMD EPYC 9R14 96-Core Processor"
    # Without /proc/cpuinfo (macOS, Windows), what the platform module says.
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "missing")
    monkeypatch.setattr(platform, "processor", lambda: "arm")
    assert hardware.cpu_model() == "arm"


def test_cuda_bf16_is_what_torch_cuda_says(monkeypatch: pytest.MonkeyPatch) -> None:
    for supported in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert hardware.native_bf16(CUDA) is supported


@pytest.mark.parametrize(
    ("precision", "device", "native", "expected"),
    [
        ("fp32", CPU, True, "fp32"),
        ("fp32", CUDA, True, "fp32"),
        ("bf16", CPU, True, "bf16"),
        ("bf16", CUDA, True, "bf16"),
        ("auto", CUDA, True, "bf16"),
        ("auto", CUDA, False, "fp32"),
        ("auto", CPU, True, "bf16"),  # the parity table in docs/performance.md decided this
        ("auto", CPU, False, "fp32"),
    ],
)
def test_resolve_precision(
    precision: str,
    device: torch.device,
    native: bool,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    recwarn: pytest.WarningsRecorder,
) -> None:
    monkeypatch.setattr(hardware, "native_bf16", lambda _device: native)
    assert hardware.resolve_precision(precision, device) == expected
    assert not recwarn.list


def test_bf16_without_native_support_runs_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "native_bf16", lambda _device: False)
    with pytest.warns(UserWarning, match="without native bfloat16.*slower than fp32"):
        assert hardware.resolve_precision("bf16", CPU) == "bf16"


# -- the training step ------------------------------------------------------------------------
def tiny_state(precision: str) -> TrainState:
    """The state `train()` trains (channels_last, fused Adam), seeded alike for any precision."""
    config = DetectorConfig(image_size="16", nz=16, ngf=8, batch_size=16, precision=precision)
    generator, discriminator = make_networks((16, 16), 1, 16, 8, 0, 0)
    state = TrainState(
        generator, discriminator, *make_optimizers(generator, discriminator, config), config
    )
    use_channels_last(state)
    return state


def test_bf16_step_matches_the_fp32_step_within_bf16_rounding() -> None:
    torch.manual_seed(0)
    x = (torch.rand(16, 1, 16, 16) * 2 - 1).contiguous(memory_format=torch.channels_last)
    fp32, bf16 = tiny_state("fp32"), tiny_state("bf16")
    before = [p.detach().clone() for p in bf16.generator.parameters()]
    losses_fp32, losses_bf16 = train_step(fp32, x), train_step(bf16, x)
    for name, value in losses_fp32.items():
        # bf16 keeps 8 significant bits (relative rounding error up to 2^-8 = 0.4%); the
        # float32 losses of bf16 activations stay well inside 2%.
        torch.testing.assert_close(losses_bf16[name], value, rtol=2e-2, atol=1e-4)
    # ...and the bf16 step did compute in bf16: its losses are not the float32 ones
    assert any(not torch.equal(losses_bf16[n], losses_fp32[n]) for n in losses_fp32)
    # weights and optimizer state stay float32, and the step updated them
    after = list(bf16.generator.parameters())
    assert all(p.dtype == torch.float32 for p in after)
    assert all(
        s.dtype == torch.float32 for st in bf16.optimizer_g.state.values() for s in st.values()
    )
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


# -- a model trained in bf16 --------------------------------------------------------------------
@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bf16") / "digits0"
    args = ["train", "--data", "digits", "--normal-class", "0", "--precision", "bf16"]
    assert main([*args, "--out", str(out), *TINY]) == 0
    return out


def test_precision_is_recorded_in_config_and_model(bf16_run: Path) -> None:
    assert yaml.safe_load((bf16_run / "config.yaml").read_text())["precision"] == "bf16"
    model = torch.load(bf16_run / "model.pt", weights_only=True)
    assert model["config"]["precision"] == "bf16"
    assert GANomalyDetector.load(bf16_run).get_params()["precision"] == "bf16"


def test_bf16_trained_model_scores_in_float32(
    bf16_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[:120] * (255.0 / 16.0)).round().astype(np.uint8)[:, None]
    detector = GANomalyDetector.load(bf16_run)
    x = detector.preprocess(images)
    generator = detector.generator_.eval()
    with torch.no_grad():
        _, z, z_hat = generator(x)
        expected = (z - z_hat).flatten(1).pow(2).mean(1).numpy()  # float32 throughout
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, z, z_hat = generator(x)
        in_bf16 = (z.float() - z_hat.float()).flatten(1).pow(2).mean(1).numpy()
    # the comparison below can tell: bf16 arithmetic would move the scores beyond its tolerance
    assert not np.allclose(in_bf16, expected, rtol=1e-4, atol=0)
    for native in (True, False):  # whatever the hardware offers, scoring does not change
        monkeypatch.setattr(hardware, "native_bf16", lambda _device, n=native: n)
        np.testing.assert_allclose(detector.decision_function(images), expected, rtol=1e-4)
