"""Model loading: model.json validation, format detection, sha256, device, warm-up."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ferry_runtime.model.base import ModelLoadError
from ferry_runtime.model.loader import LoadOptions, load_model, resolve_device, warm_up
from ferry_runtime.model.torchscript import TorchScriptModel
from runtime_helpers import write_model_dir
from torch import nn


def test_loads_a_torchscript_model_and_runs_it(tmp_path: Path) -> None:
    model = load_model(LoadOptions(model_dir=write_model_dir(tmp_path / "m"), device="cpu"))
    assert isinstance(model, TorchScriptModel)
    assert model.device == "cpu"
    assert [spec.name for spec in model.inputs] == ["INPUT__0"]
    with model.thread_context():
        (out,) = model.forward([np.ones((2, 4), dtype=np.float32)])
    np.testing.assert_array_equal(out, np.full((2, 4), 3.0, dtype=np.float32))


def test_read_only_inputs_are_accepted_without_warnings(tmp_path: Path) -> None:
    model = load_model(LoadOptions(model_dir=write_model_dir(tmp_path / "m")))
    frozen = np.frombuffer(np.ones(4, dtype=np.float32).tobytes(), dtype=np.float32)
    with model.thread_context():
        (out,) = model.forward([frozen.reshape(1, 4)])
    assert out.tolist() == [[3.0] * 4]


def test_sha256_is_checked_before_loading(tmp_path: Path) -> None:
    directory = write_model_dir(tmp_path / "m")
    digest = hashlib.sha256((directory / "model.pt").read_bytes()).hexdigest()
    load_model(LoadOptions(model_dir=directory, sha256=digest.upper()))
    with pytest.raises(ModelLoadError, match="refusing to serve"):
        load_model(LoadOptions(model_dir=directory, sha256="0" * 64))


def test_a_torch_save_pickle_is_refused_not_unpickled(tmp_path: Path) -> None:
    directory = write_model_dir(tmp_path / "m")
    torch.save(nn.Linear(4, 4), str(directory / "model.pt"))
    with pytest.raises(ModelLoadError, match=r"torch\.save checkpoint, not TorchScript"):
        load_model(LoadOptions(model_dir=directory))


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"garbage", "not a zip file"), (b"PK\x05\x06" + b"\0" * 18, "not a TorchScript model")],
)
def test_files_that_are_not_torchscript_are_refused(
    tmp_path: Path, content: bytes, message: str
) -> None:
    directory = write_model_dir(tmp_path / "m")
    (directory / "model.pt").write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        load_model(LoadOptions(model_dir=directory))


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(LoadOptions(model_dir=tmp_path / "nope"))
    directory = write_model_dir(tmp_path / "m")
    (directory / "model.pt").unlink()
    with pytest.raises(ModelLoadError, match=r"model\.pt not found"):
        load_model(LoadOptions(model_dir=directory))
    directory = write_model_dir(tmp_path / "m2")
    (directory / "model.json").unlink()
    with pytest.raises(ModelLoadError, match=r"model\.json not found"):
        load_model(LoadOptions(model_dir=directory))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("not json", "invalid"),
        ({"inputs": [], "outputs": []}, "inputs"),
        (
            {"inputs": [{"name": "X", "datatype": "FP8", "shape": [4]}], "outputs": []},
            "datatype",
        ),
        (
            {
                "inputs": [{"name": "X", "datatype": "FP32", "shape": [0]}],
                "outputs": [{"name": "Y", "datatype": "FP32", "shape": [4]}],
            },
            "positive or -1",
        ),
        (
            {
                "inputs": [
                    {"name": "X", "datatype": "FP32", "shape": [4]},
                    {"name": "X", "datatype": "FP32", "shape": [4]},
                ],
                "outputs": [{"name": "Y", "datatype": "FP32", "shape": [4]}],
            },
            "unique",
        ),
        (
            {
                "inputs": [{"name": "X", "datatype": "FP32", "shape": [4], "typo": 1}],
                "outputs": [{"name": "Y", "datatype": "FP32", "shape": [4]}],
            },
            "typo",
        ),
    ],
)
def test_model_json_is_validated_with_clear_errors(
    tmp_path: Path, config: object, message: str
) -> None:
    directory = write_model_dir(tmp_path / "m")
    text = config if isinstance(config, str) else json.dumps(config)
    (directory / "model.json").write_text(text)
    with pytest.raises(ModelLoadError, match=message) as raised:
        load_model(LoadOptions(model_dir=directory))
    assert "model.json" in str(raised.value)


def test_unsupported_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not supported"):
        load_model(LoadOptions(model_dir=write_model_dir(tmp_path / "m"), model_format="onnx"))


def test_device_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ModelLoadError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        load_model(LoadOptions(model_dir=write_model_dir(tmp_path / "m"), device="cuda"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_runs_on_the_gpu_and_returns_host_arrays(tmp_path: Path) -> None:
    model = load_model(LoadOptions(model_dir=write_model_dir(tmp_path / "m"), device="cuda"))
    assert model.device.startswith("cuda")
    warm_up(model, 8)
    with model.thread_context():
        (out,) = model.forward([np.arange(8, dtype=np.float32).reshape(2, 4)])
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, np.arange(8, dtype=np.float32).reshape(2, 4) * 2 + 1)


def test_threads_setting_is_applied(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        load_model(LoadOptions(model_dir=write_model_dir(tmp_path / "m"), threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


class WrongDtype(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float64)


class WrongRows(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:1]


class TooMany(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (WrongDtype(), "torch.float64 but model.json says FP32"),
        (WrongRows(), "shape [1, 4]"),
        (TooMany(), "returned 2 outputs but model.json lists 1"),
    ],
)
def test_warm_up_catches_a_model_that_contradicts_its_config(
    tmp_path: Path, module: nn.Module, message: str
) -> None:
    model = load_model(LoadOptions(model_dir=write_model_dir(tmp_path / "m", module)))
    with pytest.raises(ModelLoadError, match="warm-up at batch size 8") as raised:
        warm_up(model, 8)
    assert message in str(raised.value)


def test_warm_up_runs_the_largest_batch_first(tmp_path: Path) -> None:
    seen: list[int] = []

    class Recording(TorchScriptModel):
        def forward(self, inputs: list[np.ndarray]) -> list[np.ndarray]:  # type: ignore[override]
            seen.append(inputs[0].shape[0])
            return super().forward(inputs)

    loaded = load_model(LoadOptions(model_dir=write_model_dir(tmp_path / "m")))
    assert isinstance(loaded, TorchScriptModel)
    model = Recording(loaded.module, loaded.inputs, loaded.outputs, torch.device("cpu"))
    warm_up(model, 16)
    assert seen[0] == 16
    assert max(seen) == 16


def test_example_script_writes_a_loadable_model(tmp_path: Path) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "examples" / "make_example_model.py"
    spec = importlib.util.spec_from_file_location("make_example_model", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    digest = module.write_example_model(tmp_path / "example")
    assert digest == hashlib.sha256((tmp_path / "example" / "model.pt").read_bytes()).hexdigest()
    model = load_model(LoadOptions(model_dir=tmp_path / "example", sha256=digest))
    warm_up(model, 4)
    with model.thread_context():
        (out,) = model.forward([np.zeros((3, 64), dtype=np.float32)])
    assert out.shape == (3, 10)
    assert out.dtype == np.float32
