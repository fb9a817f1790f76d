"""torch.export programs (``model.pt2`` from ``torch.export.save``), run as their ``.module()``.

The tensor names, datatypes and per-row shapes come from the program's signature: inputs are
named after ``forward``'s parameters, outputs ``output_0``, ``output_1``, ...; dynamic
dimensions become ``-1``. The batch dimension (the first) must be dynamic.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

from ferry_runtime.model.base import ModelLoadError
from ferry_runtime.model.pt2 import Pt2Archive
from ferry_runtime.model.tensors import TORCH_DTYPES, TorchModel
from ferry_runtime.model.torchscript import first_line
from ferry_runtime.protocol.types import TensorSpec

OIP_DATATYPES = {dtype: name for name, dtype in TORCH_DTYPES.items()}
DYNAMIC_BATCH_HINT = (
    "export with a dynamic batch dimension: torch.export.export(model, (example,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)) or `ferry-runtime package`"
)
MAX_SAMPLE_INPUTS_BYTES = 256 << 20

Signature = tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]


class ExportedProgramModel(TorchModel):
    """The ``torch.fx.GraphModule`` of a loaded ``ExportedProgram``."""


def load_program(archive: Pt2Archive) -> torch.export.ExportedProgram:
    """``torch.export.load`` an archive that :func:`inspect_pt2` accepted.

    The sample inputs are the one pickle torch's loader reads with ``weights_only=True`` and,
    when that fails, again without it: Ferry checks them with ``weights_only`` first, so
    torch's fallback is never reached.
    """
    path = archive.path
    if archive.sample_inputs is not None:
        _check_sample_inputs(path, archive.sample_inputs)
    try:
        return torch.export.load(str(path))
    except Exception as error:  # torch raises RuntimeError, ValueError, AssertionError...
        raise ModelLoadError(
            f"torch.export.load({path}) failed: {first_line(error)}; save the program again "
            f"with this torch ({torch.__version__})"
        ) from None


def _check_sample_inputs(path: Path, entry: str) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.getinfo(entry).file_size > MAX_SAMPLE_INPUTS_BYTES:
                raise ModelLoadError(f"{path}: {entry} is larger than {MAX_SAMPLE_INPUTS_BYTES}")
            data = archive.read(entry)
        torch.load(io.BytesIO(data), weights_only=True)
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(
            f"{path}: the sample inputs ({entry}) are not plain tensors ({first_line(error)}); "
            "Ferry never unpickles arbitrary objects: export with tensor example inputs"
        ) from None


def program_signature(program: torch.export.ExportedProgram, where: Path) -> Signature:
    """Inputs and outputs of ``program`` as OIP tensor specs (batch dimension removed)."""
    nodes = {node.name: node for node in program.graph.nodes}
    inputs: list[TensorSpec] = []
    for spec in program.graph_signature.input_specs:
        if spec.kind != torch.export.graph_signature.InputKind.USER_INPUT:
            continue
        name = getattr(spec.arg, "name", "")
        inputs.append(_tensor_spec(nodes.get(name), name, "input", where))
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    produced = {
        getattr(arg, "name", None): arg
        for arg in _flatten(output_node.args[0])
        if isinstance(arg, torch.fx.Node)
    }
    outputs: list[TensorSpec] = []
    for spec in program.graph_signature.output_specs:
        if spec.kind != torch.export.graph_signature.OutputKind.USER_OUTPUT:
            continue
        name = getattr(spec.arg, "name", "")
        outputs.append(_tensor_spec(produced.get(name), f"output_{len(outputs)}", "output", where))
    if not inputs or not outputs:
        raise ModelLoadError(f"{where}: the exported program has no tensor inputs or outputs")
    return tuple(inputs), tuple(outputs)


def _flatten(value: object) -> list[object]:
    if isinstance(value, (tuple, list)):
        return [item for element in value for item in _flatten(element)]
    return [value]


def _tensor_spec(node: torch.fx.Node | None, name: str, kind: str, where: Path) -> TensorSpec:
    value = node.meta.get("val") if node is not None else None
    if not isinstance(value, torch.Tensor):
        raise ModelLoadError(
            f"{where}: {kind} {name!r} of the exported program is not a tensor; Ferry serves "
            "programs whose inputs and outputs are tensors"
        )
    datatype = OIP_DATATYPES.get(value.dtype)
    if datatype is None:
        raise ModelLoadError(f"{where}: {kind} {name!r} has dtype {value.dtype}, not servable")
    dims = [dim if isinstance(dim, int) else -1 for dim in value.shape]
    if not dims:
        raise ModelLoadError(f"{where}: {kind} {name!r} is a scalar; it needs a batch dimension")
    if kind == "input" and dims[0] != -1:
        raise ModelLoadError(
            f"{where}: input {name!r} has a static batch dimension of {dims[0]}; Ferry batches "
            f"requests, so {DYNAMIC_BATCH_HINT}"
        )
    return TensorSpec(name, datatype, tuple(dims[1:]))


def load_exported(
    archive: Pt2Archive, signature: Signature | None, device: torch.device
) -> ExportedProgramModel:
    """Load the program, check (or take) its signature, place it on ``device``."""
    program = load_program(archive)
    exported = program_signature(program, archive.path)
    inputs, outputs = check_signature(archive.path, signature, exported)
    program_device = _program_device(program)
    if program_device is not None and program_device.type != device.type:
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    return ExportedProgramModel(program.module(), inputs, outputs, device)


def _program_device(program: torch.export.ExportedProgram) -> torch.device | None:
    for tensor in (*program.state_dict.values(), *program.constants.values()):
        if isinstance(tensor, torch.Tensor):
            return tensor.device
    return None


def check_signature(where: Path, declared: Signature | None, exported: Signature) -> Signature:
    """``model.json`` (``declared``) overrides names; it must agree with the program."""
    if declared is None:
        return exported
    for kind, mine, theirs in (
        ("inputs", declared[0], exported[0]),
        ("outputs", declared[1], exported[1]),
    ):
        if len(mine) != len(theirs):
            raise ModelLoadError(
                f"{where}: model.json lists {len(mine)} {kind} but the exported program has "
                f"{len(theirs)}"
            )
        for ours, program in zip(mine, theirs, strict=True):
            if ours.datatype != program.datatype:
                raise ModelLoadError(
                    f"{where}: model.json says {kind[:-1]} {ours.name!r} is {ours.datatype}; "
                    f"the exported program has {program.datatype}"
                )
    return declared


def signature_from_specs(specs: Sequence[TensorSpec]) -> list[dict[str, object]]:
    """``model.json`` entries for ``specs``."""
    return [
        {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)} for spec in specs
    ]
