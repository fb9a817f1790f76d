"""PyTorch 2 formats: torch.export programs and AOTInductor packages (model.pt2).

The tiny model is packaged once per session with the real ``ferry-runtime package`` (export,
AOTInductor compile, check against eager) and served over REST (JSON and binary) and gRPC.
Every bad file the loader must refuse is made here from a real package.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from ferry_runtime import cli
from ferry_runtime.model.aoti import AotiModel
from ferry_runtime.model.base import ModelLoadError
from ferry_runtime.model.exported import ExportedProgramModel
from ferry_runtime.model.loader import (
    LoadOptions,
    load_model,
    locate_model,
    model_signature_of,
    warm_up,
)
from ferry_runtime.model.package import (
    InputSpec,
    PackageError,
    PackageRequest,
    package_format,
    package_model,
)
from pt2_helpers import IN_FEATURES, TinyNet, eager, package_dir, rewrite_zip
from runtime_helpers import RunningServer, launch_server, write_model_dir

pytestmark = pytest.mark.slow  # the session's AOTInductor compile

FORMATS = ("exported-program", "aot-inductor")
HELPERS = Path(__file__).resolve().parent / "pt2_helpers.py"


def copy_dir(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def rows(count: int) -> np.ndarray:
    return np.random.default_rng(count).standard_normal((count, IN_FEATURES), dtype=np.float32)


@pytest.fixture(scope="module", params=FORMATS)
def served(request: pytest.FixtureRequest, pt2_dirs: dict[str, Path]) -> Iterator[RunningServer]:
    running = launch_server(pt2_dirs[request.param], max_batch_size=8)
    yield running
    running.stop()


# ---- serving ---------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_rest_infer_equals_eager(served: RunningServer, binary: bool) -> None:
    batch = rows(5)
    client = httpclient.InferenceServerClient(served.http_url)
    tensor = httpclient.InferInput("x", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    wanted = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("scores", "total")]
    result = client.infer("model", [tensor], outputs=wanted)
    scores, total = eager(torch.from_numpy(batch))
    np.testing.assert_allclose(result.as_numpy("scores"), scores.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("total"), total.numpy(), rtol=1e-5, atol=1e-6)


def test_grpc_infer_and_metadata_come_from_the_signature(served: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(served.grpc_url)
    metadata = client.get_model_metadata("model", as_json=True)
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("x", "FP32", ["-1", str(IN_FEATURES)])
    ]
    assert [t["name"] for t in metadata["outputs"]] == ["scores", "total"]
    batch = rows(3)
    tensor = grpcclient.InferInput("x", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    result = client.infer("model", [tensor])
    scores, total = eager(torch.from_numpy(batch))
    np.testing.assert_allclose(result.as_numpy("scores"), scores.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("total"), total.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_format", FORMATS)
def test_model_json_is_optional_and_overrides_names(
    pt2_dirs: dict[str, Path], tmp_path: Path, model_format: str
) -> None:
    directory = copy_dir(pt2_dirs[model_format], tmp_path / "m")
    (directory / "model.json").unlink()
    inputs, outputs = model_signature_of(directory)
    if model_format == "exported-program":  # the program's own names: forward's parameter
        assert [s.name for s in inputs] == ["x"]
        assert [(s.name, s.shape) for s in outputs] == [("output_0", (3,)), ("output_1", (1,))]
    else:  # ferry-runtime package stored model.json in the package's metadata
        assert [s.name for s in outputs] == ["scores", "total"]
    model = load_model(LoadOptions(directory))
    warm_up(model, 4)
    custom = {
        "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [IN_FEATURES]}],
        "outputs": [
            {"name": "OUTPUT__0", "datatype": "FP32", "shape": [3]},
            {"name": "OUTPUT__1", "datatype": "FP32", "shape": [1]},
        ],
    }
    (directory / "model.json").write_text(json.dumps(custom))
    model = load_model(LoadOptions(directory))
    assert [s.name for s in model.inputs] == ["INPUT__0"]
    assert [s.name for s in model.outputs] == ["OUTPUT__0", "OUTPUT__1"]


def test_model_json_that_contradicts_the_program_is_refused(
    pt2_dirs: dict[str, Path], tmp_path: Path
) -> None:
    directory = copy_dir(pt2_dirs["exported-program"], tmp_path / "m")
    config = json.loads((directory / "model.json").read_text())
    config["outputs"] = config["outputs"][:1]
    (directory / "model.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"model.json lists 1 outputs but the exported"):
        load_model(LoadOptions(directory))


# ---- format detection --------------------------------------------------------------------------


def test_auto_detects_each_format(pt2_dirs: dict[str, Path], tmp_path: Path) -> None:
    assert locate_model(pt2_dirs["exported-program"]).format == "exported-program"
    assert locate_model(pt2_dirs["aot-inductor"]).format == "aot-inductor"
    assert locate_model(write_model_dir(tmp_path / "ts")).format == "torchscript"
    assert isinstance(load_model(LoadOptions(pt2_dirs["aot-inductor"])), AotiModel)
    loaded = load_model(LoadOptions(pt2_dirs["exported-program"], model_format="exported-program"))
    assert isinstance(loaded, ExportedProgramModel)


@pytest.mark.parametrize(
    ("directory", "requested", "message"),
    [
        ("exported-program", "aot-inductor", "is an exported program: set the format to export"),
        ("aot-inductor", "exported-program", "is an AOTInductor package: set the format to aot"),
        ("aot-inductor", "torchscript", r"model\.pt not found; it holds model\.pt2"),
    ],
)
def test_an_explicit_format_that_does_not_match_the_files_is_refused(
    pt2_dirs: dict[str, Path], directory: str, requested: str, message: str
) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_model(LoadOptions(pt2_dirs[directory], model_format=requested))


def test_both_files_with_auto_ask_for_a_format(pt2_dirs: dict[str, Path], tmp_path: Path) -> None:
    directory = copy_dir(pt2_dirs["exported-program"], tmp_path / "m")
    shutil.copy(write_model_dir(tmp_path / "ts") / "model.pt", directory / "model.pt")
    with pytest.raises(ModelLoadError, match=r"holds both model.pt and model.pt2"):
        load_model(LoadOptions(directory))
    assert locate_model(directory, "torchscript").format == "torchscript"
    assert locate_model(directory, "exported-program").format == "exported-program"


def test_sha256_covers_model_pt2(pt2_dirs: dict[str, Path]) -> None:
    directory = pt2_dirs["exported-program"]
    digest = hashlib.sha256((directory / "model.pt2").read_bytes()).hexdigest()
    load_model(LoadOptions(directory, sha256=digest))
    with pytest.raises(ModelLoadError, match=r"sha256 of .*model\.pt2 .* refusing to serve"):
        load_model(LoadOptions(directory, sha256="0" * 64))


# ---- bad files -------------------------------------------------------------------------------


@pytest.mark.parametrize("model_format", FORMATS)
def test_truncated_and_foreign_files_get_a_precise_error(
    pt2_dirs: dict[str, Path], tmp_path: Path, model_format: str
) -> None:
    directory = copy_dir(pt2_dirs[model_format], tmp_path / "m")
    data = (directory / "model.pt2").read_bytes()
    (directory / "model.pt2").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"not a PT2 archive .* truncated"):
        load_model(LoadOptions(directory))
    (directory / "model.pt2").write_bytes(b"\x7fELF not a model at all")
    with pytest.raises(ModelLoadError, match="not a PT2 archive"):
        load_model(LoadOptions(directory))


def test_torchscript_or_a_checkpoint_named_model_pt2_is_refused(tmp_path: Path) -> None:
    directory = write_model_dir(tmp_path / "m")
    (directory / "model.pt").rename(directory / "model.pt2")
    with pytest.raises(ModelLoadError, match=r"TorchScript archive or a torch.save checkpoint"):
        load_model(LoadOptions(directory))
    torch.save({"weight": torch.ones(2)}, str(directory / "model.pt2"))
    with pytest.raises(ModelLoadError, match="Ferry never unpickles"):
        load_model(LoadOptions(directory))


def test_a_program_with_a_static_batch_dimension_says_how_to_export(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    program = torch.export.export(TinyNet().eval(), (torch.ones(2, IN_FEATURES),))
    torch.export.save(program, str(directory / "model.pt2"))
    with pytest.raises(ModelLoadError, match=r"static batch dimension of 2.*torch\.export\.Dim"):
        load_model(LoadOptions(directory))


def test_pickled_payloads_are_refused_before_torch_sees_them(
    pt2_dirs: dict[str, Path], tmp_path: Path
) -> None:
    source = pt2_dirs["exported-program"] / "model.pt2"
    directory = tmp_path / "m"
    directory.mkdir()

    def pickled_weight(name: str, data: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            next(iter(config["config"].values()))["use_pickle"] = True
            return json.dumps(config).encode()
        return data

    rewrite_zip(source, directory / "model.pt2", pickled_weight)
    with pytest.raises(ModelLoadError, match="stored as a pickled object"):
        load_model(LoadOptions(directory))

    def opaque_constant(name: str, data: bytes) -> bytes:
        if name.endswith("model_constants_config.json"):
            return json.dumps({"config": {"c": {"path_name": "opaque_obj_0"}}}).encode()
        return data

    rewrite_zip(source, directory / "model.pt2", opaque_constant)
    with pytest.raises(ModelLoadError, match="stored as a pickled object"):
        load_model(LoadOptions(directory))


class _Payload:
    """Unpickling this would run code; the loader must refuse it without unpickling."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled!",))


def test_sample_inputs_that_are_not_plain_tensors_are_never_unpickled(
    pt2_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    buffer = io.BytesIO()
    torch.save(_Payload(), buffer)

    def evil_samples(name: str, data: bytes) -> bytes:
        return buffer.getvalue() if "/sample_inputs/" in name else data

    rewrite_zip(pt2_dirs["exported-program"] / "model.pt2", directory / "model.pt2", evil_samples)
    with pytest.raises(ModelLoadError, match="not plain tensors"):
        load_model(LoadOptions(directory))
    assert "unpickled!" not in capsys.readouterr().out
    assert pickle.dumps(1)  # the module is used: pickle stays importable for the payload


def test_a_cuda_package_on_a_cpu_pod_says_what_to_do(
    pt2_dirs: dict[str, Path], tmp_path: Path
) -> None:
    directory = tmp_path / "m"
    directory.mkdir()

    def compiled_for_cuda(name: str, data: bytes) -> bytes:
        if name.endswith("_metadata.json"):
            metadata = json.loads(data)
            metadata["AOTI_DEVICE_KEY"] = "cuda"
            return json.dumps(metadata).encode()
        return data

    rewrite_zip(pt2_dirs["aot-inductor"] / "model.pt2", directory / "model.pt2", compiled_for_cuda)
    message = "compiled for CUDA but the model runs on cpu: serve it on a GPU"
    with pytest.raises(ModelLoadError, match=message):
        load_model(LoadOptions(directory, device="cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match=message):
            load_model(LoadOptions(directory, device="auto"))


def test_an_aoti_package_without_any_signature_asks_for_model_json(
    pt2_dirs: dict[str, Path], tmp_path: Path
) -> None:
    directory = tmp_path / "m"
    directory.mkdir()

    def no_signature(name: str, data: bytes) -> bytes:
        if name.endswith("_metadata.json"):
            metadata = json.loads(data)
            del metadata["ferry.signature"]
            return json.dumps(metadata).encode()
        return data

    rewrite_zip(pt2_dirs["aot-inductor"] / "model.pt2", directory / "model.pt2", no_signature)
    with pytest.raises(ModelLoadError, match=r"without a tensor signature: add model.json"):
        model_signature_of(directory)
    shutil.copy(pt2_dirs["aot-inductor"] / "model.json", directory / "model.json")
    warm_up(load_model(LoadOptions(directory)), 2)


def test_serve_ends_with_the_load_failure_status_and_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "model.pt2").write_bytes(b"PK\x03\x04 truncated")
    termination_log = tmp_path / "termination-log"
    termination_log.write_text("")
    monkeypatch.setenv("FERRY_RUNTIME_TERMINATION_LOG", str(termination_log))
    assert cli.main(["serve", "--model-dir", str(directory), "--http-port", "0"]) == 3
    assert "not a PT2 archive" in capsys.readouterr().err
    assert "not a PT2 archive" in termination_log.read_text()


# ---- ferry-runtime package -----------------------------------------------------------------


def test_package_cli_writes_a_directory_and_prints_its_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = cli.main(
        [
            "package",
            f"{HELPERS}:build_tiny",
            "--input",
            f"x:FP32:-1,{IN_FEATURES}",
            "--format",
            "exported-program",
            "--out",
            str(out),
        ]
    )
    assert status == 0, capsys.readouterr().err
    digest = capsys.readouterr().out.strip()
    assert digest == hashlib.sha256((out / "model.pt2").read_bytes()).hexdigest()
    assert sorted(path.name for path in out.iterdir()) == ["model.json", "model.pt2"]


def test_package_refuses_a_model_that_disagrees_with_eager(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"disagrees with eager .* nothing was written"):
        package_dir(tmp_path / "out", "exported-program", factory="build_drifting", outputs=())
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ferry-package-")]


def test_package_says_when_no_compiler_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(PackageError, match=r"needs a C\+\+ compiler and none was found"):
        package_dir(tmp_path / "out", "aot-inductor")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x:FP32", "expected NAME:DATATYPE:SHAPE"),
        ("x:FLOAT:-1,4", "datatype 'FLOAT'"),
        ("x:FP32:8,4", "first dimension is the batch"),
        ("x:FP32:-1,a", "comma-separated integers"),
    ],
)
def test_package_input_specs_are_checked(text: str, message: str) -> None:
    with pytest.raises(PackageError, match=message):
        InputSpec.parse(text)


def test_package_names_a_factory_that_cannot_be_imported(tmp_path: Path) -> None:
    def request(factory: str) -> PackageRequest:
        return PackageRequest(
            factory=factory,
            inputs=(InputSpec("x", "FP32", (-1, 4)),),
            out=tmp_path / "o",
            format="exported-program",
        )

    with pytest.raises(PackageError, match="cannot import 'no_such_module_here'"):
        package_model(request("no_such_module_here:build"))
    with pytest.raises(PackageError, match="'nope' is not a callable"):
        package_model(request(f"{HELPERS}:nope"))


# ---- GPU ---------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model_format", FORMATS)
def test_cuda_packages_serve_on_the_gpu(tmp_path: Path, model_format: str) -> None:
    from ferry_runtime.model.package import package_model as package

    out = tmp_path / "cuda"
    package(
        PackageRequest(
            factory=f"{HELPERS}:build_tiny",
            inputs=(InputSpec("x", "FP32", (-1, IN_FEATURES)),),
            outputs=("scores", "total"),
            out=out,
            format=package_format(model_format),
            device="cuda",
        )
    )
    model = load_model(LoadOptions(out, device="auto"))
    assert model.device.startswith("cuda")
    batch = rows(4)
    with model.thread_context():
        scores, total = model.forward([batch])
    expected_scores, expected_total = eager(torch.from_numpy(batch))
    np.testing.assert_allclose(scores, expected_scores.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(total, expected_total.numpy(), rtol=1e-4, atol=1e-5)
    if model_format == "aot-inductor":
        with pytest.raises(ModelLoadError, match="compiled for cuda but the model runs on cpu"):
            load_model(LoadOptions(out, device="cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_exported_program_moves_to_the_gpu(pt2_dirs: dict[str, Path]) -> None:
    model = load_model(LoadOptions(pt2_dirs["exported-program"], device="cuda"))
    assert model.device.startswith("cuda")
    warm_up(model, 4)


def test_a_noexec_temporary_directory_is_named_as_the_cause() -> None:
    from ferry_runtime.model.aoti import load_failure_hint

    hint = load_failure_hint("Error in dlopen: /tmp/x/model.so: failed to map segment from shared")
    assert "mounted noexec" in hint
    assert "TMPDIR must allow executables" in hint
    assert "compile it again" in load_failure_hint("undefined symbol: _ZN5torch3foo")


@pytest.mark.parametrize(
    ("isa", "flags", "missing"),
    [
        (
            "AVX512 AVX512_VNNI",
            {"avx2", "fma"},
            ["avx512f", "avx512dq", "avx512vl", "avx512bw", "avx512_vnni"],
        ),
        ("AVX2", {"avx2", "fma"}, []),
        ("AVX512", {"avx512f", "avx512dq", "avx512vl", "avx512bw"}, []),
        ("NEON", set(), []),  # not an x86 ISA Ferry knows the flags of: not guessed at
        ("", set(), []),
    ],
)
def test_missing_cpu_flags(isa: str, flags: set[str], missing: list[str]) -> None:
    from ferry_runtime.model.aoti import missing_cpu_flags

    assert missing_cpu_flags(isa, flags) == missing


def test_a_package_for_a_newer_cpu_is_refused_instead_of_crashing(
    pt2_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from ferry_runtime.model.aoti import load_aoti, read_cpu_flags
    from ferry_runtime.model.pt2 import inspect_pt2

    directory = tmp_path / "m"
    directory.mkdir()

    def compiled_with_avx512(name: str, data: bytes) -> bytes:
        if name.endswith("_metadata.json"):
            metadata = json.loads(data)
            metadata["AOTI_CPU_ISA"] = "AVX512 AVX512_VNNI"
            return json.dumps(metadata).encode()
        return data

    rewrite_zip(
        pt2_dirs["aot-inductor"] / "model.pt2", directory / "model.pt2", compiled_with_avx512
    )
    archive = inspect_pt2(directory / "model.pt2")
    with pytest.raises(ModelLoadError, match=r"compiled for AVX512 AVX512_VNNI but this CPU lacks"):
        load_aoti(archive, None, torch.device("cpu"), cpu_flags={"avx2", "fma"})
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n")
    assert read_cpu_flags(cpuinfo) == {"fpu", "avx2", "fma"}
    assert read_cpu_flags(tmp_path / "none") is None


def test_a_cpu_package_on_a_cuda_pod_says_what_to_do(pt2_dirs: dict[str, Path]) -> None:
    from ferry_runtime.model.aoti import check_device
    from ferry_runtime.model.pt2 import inspect_pt2

    archive = inspect_pt2(pt2_dirs["aot-inductor"] / "model.pt2")
    with pytest.raises(ModelLoadError, match=r"compiled for cpu but the model runs on cuda"):
        check_device(archive, "cpu", torch.device("cuda"))
    check_device(archive, "cpu", torch.device("cpu"))
