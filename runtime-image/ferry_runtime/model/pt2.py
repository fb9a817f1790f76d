"""``model.pt2``: tell a ``torch.export.save`` program from an AOTInductor package, and refuse
archives whose loading would unpickle objects (only raw tensor payloads are accepted).

PT2 archives are zip files whose entries sit under one root folder: ``archive_format`` says
``pt2``; ``models/<name>.json`` holds a serialized exported program (weights and constants in
``data/weights`` and ``data/constants``, each described by a JSON payload config);
``data/aotinductor/<name>/`` holds an AOTInductor compiled model (a shared library). torch's
loader honours payloads marked ``use_pickle`` and opaque objects with ``pickle.loads``: Ferry
never lets it reach them.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ferry_runtime.model.base import ModelLoadError

Pt2Kind = Literal["exported-program", "aot-inductor"]
MODEL_NAME = "model"
"""The name torch gives the (only) model of an archive it writes."""
MAX_PAYLOAD_CONFIG_BYTES = 16 << 20
TENSOR_CONSTANT_PREFIX = "tensor_"
WRITE_HINT = (
    "write model.pt2 with torch.export.save(torch.export.export(...), 'model.pt2') or "
    "torch._inductor.aoti_compile_and_package(...), or run `ferry-runtime package`"
)


@dataclass(frozen=True, slots=True)
class Pt2Archive:
    """What a ``model.pt2`` holds, as far as Ferry needs to know before loading it."""

    path: Path
    kind: Pt2Kind
    root: str
    """The archive's root folder (``<root>/archive_format``)."""
    sample_inputs: str | None
    """Entry of the exported program's sample inputs (checked with ``weights_only``)."""


def inspect_pt2(path: Path) -> Pt2Archive:
    """Read the archive's directory (no payload is loaded) and decide what it is.

    Raises ``ModelLoadError`` for a file that is not a PT2 archive (foreign or truncated) or
    one whose loading would unpickle arbitrary objects.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            root = _root(path, archive, names)
            has_aoti = any(name.startswith(f"{root}/data/aotinductor/") for name in names)
            programs = [
                name
                for name in names
                if name.startswith(f"{root}/models/") and name.endswith(".json")
            ]
            if programs:
                _refuse_pickled_payloads(path, archive, root, names)
            sample = f"{root}/data/sample_inputs/{MODEL_NAME}.pt"
    except zipfile.BadZipFile as error:
        raise ModelLoadError(
            f"{path} is not a PT2 archive (not a readable zip file: {error}); the file may be "
            f"truncated or of another kind: {WRITE_HINT}"
        ) from None
    except OSError as error:
        raise ModelLoadError(f"cannot read {path}: {error}") from None
    if has_aoti:
        return Pt2Archive(path, "aot-inductor", root, None)
    if f"{root}/models/{MODEL_NAME}.json" in names:
        return Pt2Archive(path, "exported-program", root, sample if sample in names else None)
    raise ModelLoadError(
        f"{path} is a PT2 archive without an exported program or an AOTInductor model "
        f"(models/{MODEL_NAME}.json or data/aotinductor/); {WRITE_HINT}"
    )


def _root(path: Path, archive: zipfile.ZipFile, names: list[str]) -> str:
    formats = [name for name in names if name.count("/") == 1 and name.endswith("/archive_format")]
    if not formats:
        if any(name.endswith(("constants.pkl", "data.pkl")) for name in names):
            raise ModelLoadError(
                f"{path} is a TorchScript archive or a torch.save checkpoint, not a PT2 "
                "archive: TorchScript goes in model.pt; Ferry never unpickles checkpoints"
            )
        raise ModelLoadError(f"{path} is a zip file but not a PT2 archive; {WRITE_HINT}")
    entry = formats[0]
    if archive.read(entry).strip() != b"pt2":
        raise ModelLoadError(f"{path}: {entry} does not say pt2; {WRITE_HINT}")
    return entry.split("/", 1)[0]


def _refuse_pickled_payloads(
    path: Path, archive: zipfile.ZipFile, root: str, names: list[str]
) -> None:
    legacy = [
        name
        for name in names
        if name.startswith((f"{root}/data/weights/", f"{root}/data/constants/"))
        and name.endswith(".pt")
    ]
    if legacy:
        raise ModelLoadError(
            f"{path} stores weights in torch's legacy pickled format ({legacy[0]}); Ferry "
            "never unpickles them: save it again with this torch's torch.export.save"
        )
    for name in names:
        if not (
            name.startswith((f"{root}/data/weights/", f"{root}/data/constants/"))
            and name.endswith("_config.json")
        ):
            continue
        info = archive.getinfo(name)
        if info.file_size > MAX_PAYLOAD_CONFIG_BYTES:
            raise ModelLoadError(f"{path}: {name} is larger than {MAX_PAYLOAD_CONFIG_BYTES} bytes")
        try:
            config = json.loads(archive.read(name))
            entries = dict(config["config"])
        except (ValueError, KeyError, TypeError) as error:
            raise ModelLoadError(f"{path}: {name} is not a payload config ({error})") from None
        constants = "/data/constants/" in name
        for fqn, meta in entries.items():
            plain_tensor = (
                isinstance(meta, dict)
                and meta.get("use_pickle") is False
                and (
                    not constants
                    or str(meta.get("path_name", "")).startswith(TENSOR_CONSTANT_PREFIX)
                )
            )
            if not plain_tensor:
                raise ModelLoadError(
                    f"{path}: {fqn!r} is stored as a pickled object (a tensor subclass, a "
                    "script object or an opaque constant); Ferry never unpickles model files. "
                    "Export a module whose weights and constants are plain tensors"
                )
