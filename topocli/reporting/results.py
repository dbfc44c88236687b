"""Results folders: every ``topo`` command writes exactly one, atomically.

A results folder holds CSV tables, sheet maps as NIfTI, figures, a self-contained ``report.html``
and ``manifest.json`` (command, parameters, inputs with hashes, package versions, seed, outputs
with hashes). The next command reads the folder back through :mod:`topocli.reporting.reader`
(:func:`~topocli.reporting.reader.read_results`, :func:`~topocli.reporting.reader.load_sheet_map`).

Atomicity
---------
:class:`ResultsFolder` builds everything in a hidden temporary folder beside ``out`` (same
filesystem) and renames it into place only when the ``with`` block ends without an exception.
When the block raises, the temporary folder is removed and ``out`` is left exactly as it was: a
failed command never leaves a half results folder. With ``overwrite=True`` an existing results
folder is swapped out atomically (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere: rename the old
one aside, rename the new one in, delete the old one). Overwriting is only allowed for a folder
that is itself a topo results folder (it has a ``manifest.json``), so ``--out ~ --overwrite``
cannot delete a home directory.

Sheet maps as NIfTI
-------------------
One sheet map is a 3-D image of shape ``(cols, rows, 1)``: voxel axis ``i`` is the sheet column,
``j`` the sheet row, ``k`` a single slice, so ``data[col, row, 0]`` is the value of the unit at
grid cell ``(row, col)``, NaN where no unit sits. Several maps go in one 4-D image
``(cols, rows, 1, n_maps)``. The affine is ``diag(mm, -mm, mm, 1)`` (``mm`` = mm per unit): world
``x = x_mm`` and world ``y = -y_mm``, so row 0, drawn at the top of topo's figures, is at the top
(anterior) of nilearn's axial view too, and columns run left to right in both
(nilearn draws x to the right). The header carries the statistic's NIfTI intent (t with its df
where one df holds for every unit, p for p and q maps, z, labels for cluster maps). Every NIfTI
file has a JSON sidecar (same stem, ``.json``) with the map names, each map's statistic, the df
where it varies (per map, or per unit as a list in unit order), the axis convention and the name
of the sheet file (``sheet.safetensors``, written once per results folder) so the reader can
rebuild unit vectors exactly, permuted sheets included.

Reports, figures and the summary
--------------------------------
:meth:`ResultsFolder.write_report` renders the report when the folder is committed, after
:meth:`ResultsFolder.write_manifest`: the report then links the reports of the results folders
named in the manifest's inputs (relative links), writes each figure beside it as
``figures/<name>.png`` (and ``.svg`` for vector figures), and writes the report's
machine-readable summary as ``summary.json`` beside ``manifest.json``
(:func:`topocli.reporting.summary.summary_of` reads it back).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as _dt
import enum
import errno
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from topocli.errors import TopoInputError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
SUMMARY = "summary.json"
REPORT = "report.html"
# statistic -> (nibabel intent name, intent_name written in the header)
MAP_INTENTS = {
    "t": ("t test", "t"),
    "z": ("z score", "z"),
    "p": ("p value", "p"),
    "q": ("p value", "q BH-FDR"),
    "label": ("label", "cluster id"),
    "F": ("estimate", "F"),
    "estimate": ("estimate", ""),
}
SHEET_FILE = "sheet.safetensors"
CHUNK = 1 << 20
VERSIONED_PACKAGES = (
    "topo",
    "torch",
    "transformers",
    "numpy",
    "scipy",
    "nibabel",
    "nilearn",
    "pandas",
    "numba",
)


# ---------------------------------------------------------------------- small utilities
def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Readers see either the old file or the complete new one, never a partial write.

    Parameters
    ----------
    path : str or Path
        Destination file; its folder must exist.
    data : bytes

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write_bytes` for text (``\\n`` line endings kept as given)."""
    return atomic_write_bytes(path, text.encode(encoding))


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(path: str | Path) -> tuple[str, int, int]:
    """One SHA-256 over a folder: sorted relative paths and file contents, streamed.

    For every regular file (symlinks to files are followed, symlinked folders are not), in
    sorted order of the POSIX relative path, the hash takes the UTF-8 path, a NUL byte, the
    size as 8 big-endian bytes and the contents. Renaming, moving, adding or editing any file
    changes the hash; timestamps and permissions do not.

    Returns
    -------
    (hexdigest, n_files, n_bytes)
    """
    root = Path(path)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath, name)
            if full.is_file():
                files.append((full.relative_to(root).as_posix(), full))
    files.sort()
    h = hashlib.sha256()
    total = 0
    for rel, full in files:
        size = full.stat().st_size
        total += size
        h.update(rel.encode("utf-8") + b"\0" + size.to_bytes(8, "big"))
        with open(full, "rb") as f:
            for chunk in iter(lambda f=f: f.read(CHUNK), b""):
                h.update(chunk)
    return h.hexdigest(), len(files), total


def describe_input(value: str | Path) -> dict[str, Any]:
    """Path, kind and hash of one input: a file, a folder or a plain reference (e.g. hub id)."""
    p = Path(value).expanduser()
    if p.is_file():
        return {
            "path": str(p.resolve()),
            "kind": "file",
            "bytes": p.stat().st_size,
            "sha256": sha256_file(p),
        }
    if p.is_dir():
        digest, n_files, n_bytes = sha256_tree(p)
        return {
            "path": str(p.resolve()),
            "kind": "folder",
            "n_files": n_files,
            "bytes": n_bytes,
            "sha256": digest,
        }
    return {"path": str(value), "kind": "reference", "sha256": None}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (``None`` when absent)."""
    out: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    if out["topo"] is None:
        from topocli import __version__

        out["topo"] = __version__
    out["python"] = platform.python_version()
    return out


def utc_now_iso() -> str:
    """Current UTC time as ISO 8601 (``SOURCE_DATE_EPOCH`` wins when set, for reproducibility)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None and epoch.strip().isdigit():
        now = _dt.datetime.fromtimestamp(int(epoch), tz=_dt.UTC)
    else:
        now = _dt.datetime.now(tz=_dt.UTC)
    return now.isoformat(timespec="seconds").replace("+00:00", "Z")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths, enums, tuples and sets to JSON; NaN/inf -> None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_jsonable(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, (Path, PurePosixPath)):
        return str(obj)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "__fspath__"):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON: {obj!r}")


def json_dumps(obj: Any) -> str:
    """Deterministic, strict JSON text (2-space indent, trailing newline)."""
    return json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_relative(name: str | Path) -> PurePosixPath:
    rel = PurePosixPath(Path(name).as_posix())
    if rel.is_absolute() or not rel.parts or ".." in rel.parts:
        raise ValueError(f"results file names must be relative paths inside the folder: {name!r}")
    return rel


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). False when the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    res = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if res == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_folder(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` in place of ``out`` (atomic swap where Linux allows).

    ``out`` must exist. Without renameat2 the old folder is renamed aside first and restored if
    the second rename fails, so ``out`` is never lost.
    """
    if _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    aside = temp_sibling(out, "old")
    aside.rmdir()
    os.rename(out, aside)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)


# ---------------------------------------------------------------------- temp folders and locks
def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (``/proc/PID/stat`` field 22), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    return stat[stat.rindex(")") + 2 :].split()[19]


def process_tag() -> str:
    """``PID-STARTTIME`` of this process: names its temp folders, survives pid reuse."""
    pid = os.getpid()
    return f"{pid}-{_start_time(pid) or 0}"


def tag_is_alive(tag: str) -> bool:
    """Whether the process that wrote a :func:`process_tag` still runs."""
    pid, _, start = tag.partition("-")
    if not pid.isdigit():
        return True  # not ours: never touch it
    if not Path("/proc").is_dir():  # no /proc (macOS): ask the kernel whether the pid exists
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    now = _start_time(int(pid))
    return now is not None and (start in ("0", now))


def apply_umask(folder: Path) -> None:
    """Give every file and folder under ``folder`` the modes the user's umask asks for.

    Temp files and folders (``mkstemp`` / ``mkdtemp``) and safetensors' writer create 0600 /
    0700; a results folder or checkpoint is the user's, readable as their umask says.
    """
    mask = _umask()
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def temp_sibling(out: Path, kind: str) -> Path:
    """A new hidden folder ``.NAME.KIND-PID-START-RANDOM`` beside ``out``, for this process."""
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.{kind}-{process_tag()}-"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the folder is the user's result
    return tmp


def remove_stale_siblings(out: Path, kinds: Sequence[str] = ("tmp", "old")) -> list[Path]:
    """Remove the temp folders beside ``out`` left by killed processes; returns them."""
    removed = []
    for kind in kinds:
        prefix = f".{out.name}.{kind}-"
        for p in out.parent.glob(f"{glob_escape(prefix)}*"):
            tag = p.name[len(prefix) :].rsplit("-", 1)[0]
            if p.is_dir() and not p.is_symlink() and not tag_is_alive(tag):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def glob_escape(text: str) -> str:
    """``text`` with glob metacharacters escaped."""
    import glob

    return glob.escape(text)


class FolderLock:
    """An exclusive, non-blocking lock on writing ``out`` (``.NAME.lock`` beside it, flock).

    A second command writing the same folder at the same time is refused in one line instead of
    racing the first one's rename.
    """

    def __init__(self, out: Path) -> None:
        self.path = out.parent / f".{out.name}.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise TopoInputError(
                    f"another topo command (pid {holder.split('-')[0]}) is writing this folder "
                    "now; wait for it or choose another --out",
                    self.path.parent / self.path.name[1:-5],
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file its previous holder just unlinked
                os.ftruncate(fd, 0)
                os.pwrite(fd, process_tag().encode(), 0)
                self.fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None


def foreign_folder_reason(folder: Path) -> str | None:
    """Why ``folder`` is not a results folder topo wrote (None when it is one).

    topo's own folder has a ``manifest.json`` with ``tool: topo``, the manifest format, the
    command and a list of outputs with their sha256, and holds no file that list does not name.
    """
    mpath = folder / MANIFEST
    if not mpath.is_file():
        return "is not a topo results folder (no manifest.json)"
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "has a manifest.json that topo cannot read"
    outputs = manifest.get("outputs") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("tool") != "topo"
        or manifest.get("format") != MANIFEST_FORMAT
        or not isinstance(manifest.get("command"), str)
        or not isinstance(outputs, list)
        or not all(isinstance(r, dict) and {"path", "sha256"} <= set(r) for r in outputs)
    ):
        return "has a manifest.json that topo did not write"
    listed = {str(r["path"]) for r in outputs} | {MANIFEST}
    for p in folder.rglob("*"):
        if p.is_file() or p.is_symlink():
            rel = p.relative_to(folder).as_posix()
            if rel not in listed:
                return f"holds {rel}, which topo did not write"
    return None


# ---------------------------------------------------------------------- the results folder
class ResultsFolder:
    """Context manager that builds one results folder and renames it into place at the end.

    Parameters
    ----------
    out : str or Path
        Final folder. It must not exist, or be empty, or (with ``overwrite``) be an earlier topo
        results folder. Missing parent folders are created (and removed again on failure).
    overwrite : bool
        Replace an existing results folder.

    Examples
    --------
    >>> with ResultsFolder(out, overwrite=False) as rf:          # doctest: +SKIP
    ...     rf.write_csv("clusters.csv", table)
    ...     rf.write_sheet_nifti("tmap.nii.gz", t, sheet)
    ...     rf.save_figure("tmap.png", plot_sheet_map(t, sheet, "t map"))
    ...     rf.write_report(report)
    ...     rf.write_manifest("localize", params, {"stimuli": stim_dir}, seed=0)
    """

    def __init__(self, out: str | Path, overwrite: bool = False) -> None:
        self.out = Path(os.path.realpath(Path(out).expanduser()))
        self.overwrite = bool(overwrite)
        self.tmp: Path | None = None
        self._manifest: dict[str, Any] | None = None
        self._created_parents: list[Path] = []
        self._sheet: Any = None
        self._sheet_file: str | None = None
        self._lock: FolderLock | None = None
        self._reports: list[tuple[Any, str, bool]] = []
        self.committed = False

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> ResultsFolder:
        self._validate()
        parent = self.out.parent
        missing = []
        p = parent
        while not p.exists():
            missing.append(p)
            p = p.parent
        self._created_parents = missing
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._remove_created_parents()
            raise TopoInputError(
                f"cannot create the results folder ({exc.strerror})", parent
            ) from exc
        if not os.access(parent, os.W_OK | os.X_OK):
            self._remove_created_parents()
            raise TopoInputError("folder is not writable; choose another --out", parent)
        try:
            lock = FolderLock(self.out)
            lock.acquire()
            self._lock = lock
            remove_stale_siblings(self.out)
            tmp = temp_sibling(self.out, "tmp")
        except OSError as exc:
            self._release()
            self._remove_created_parents()
            raise TopoInputError(
                f"cannot write here ({exc.strerror}); choose another --out", parent
            ) from exc
        except BaseException:
            self._release()
            self._remove_created_parents()
            raise
        self.tmp = Path(tmp)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is not None:
                self._discard()
                return False
            try:
                self._commit()
            except BaseException:
                self._discard()
                raise
            return False
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _validate(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise TopoInputError("exists and is not a folder; choose another --out", out)
        if out.is_dir() and any(out.iterdir()):
            if not self.overwrite:
                raise TopoInputError("exists and is not empty; pass --overwrite", out)
            reason = foreign_folder_reason(out)
            if reason is not None:
                raise TopoInputError(f"{reason}; refusing to overwrite it", out)
        if out == Path(out.anchor):
            raise TopoInputError("cannot write results to a filesystem root", out)

    def _discard(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        self._release()  # the lock file first: it sits in a parent that may be removed
        self._remove_created_parents()

    def _remove_created_parents(self) -> None:
        for p in self._created_parents:
            with contextlib.suppress(OSError):
                p.rmdir()
        self._created_parents = []

    def _commit(self) -> None:
        tmp = self._require_open()
        if self._manifest is None:
            raise RuntimeError("ResultsFolder: call write_manifest(...) before the block ends")
        manifest = dict(self._manifest)
        self._render_reports(manifest)
        manifest["outputs"] = self._list_outputs()
        (tmp / MANIFEST).write_text(json_dumps(manifest), encoding="utf-8")
        apply_umask(tmp)
        out = self.out
        self._validate()  # again: something may have appeared at ``out`` meanwhile
        if out.is_dir() and any(out.iterdir()):
            self._swap_in(tmp, out)
        else:
            if out.is_dir():
                out.rmdir()
            try:
                os.rename(tmp, out)
            except OSError as exc:
                raise TopoInputError(
                    f"cannot move results into place ({exc.strerror})", out
                ) from exc
        self.tmp = None
        self.committed = True
        self._created_parents = []

    def _swap_in(self, tmp: Path, out: Path) -> None:
        replace_folder(tmp, out)

    def _require_open(self) -> Path:
        if self.tmp is None:
            raise RuntimeError("ResultsFolder is not open: use it as a context manager")
        return self.tmp

    def _list_outputs(self) -> list[dict[str, Any]]:
        return list_outputs(self._require_open())

    # ------------------------------------------------------------------ writers
    def path(self, name: str | Path) -> Path:
        """Where to write ``name`` (a relative path) now; parent folders are created."""
        rel = _check_relative(name)
        p = self._require_open().joinpath(*rel.parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def files(self) -> list[str]:
        """Relative paths of the files written so far (sorted)."""
        tmp = self._require_open()
        return sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())

    def write_bytes(self, name: str | Path, data: bytes) -> Path:
        p = self.path(name)
        p.write_bytes(data)
        return p

    def write_text(self, name: str | Path, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8"))

    def write_csv(self, name: str | Path, df: Any) -> Path:
        """Write a pandas DataFrame as CSV: no index, ``\\n`` line ends, UTF-8.

        Floats use pandas' default shortest round-trip repr, so ``pd.read_csv`` gives back the
        same float64 values; the same DataFrame always gives the same bytes.
        """
        text = df.to_csv(index=False, lineterminator="\n")
        return self.write_text(name, text)

    def write_json(self, name: str | Path, obj: Any) -> Path:
        """Write strict JSON (numpy types, paths and enums converted; NaN becomes null)."""
        return self.write_text(name, json_dumps(obj))

    def save_figure(self, name: str | Path, fig: Any, dpi: int = 150) -> Path:
        """Save a matplotlib Figure as PNG (or SVG/PDF by the name's suffix)."""
        from topocli.reporting.plotting import figure_to_bytes

        fmt = Path(str(name)).suffix.lstrip(".").lower() or "png"
        return self.write_bytes(name, figure_to_bytes(fig, fmt=fmt, dpi=dpi))

    def write_report(self, report: Any, name: str | Path = REPORT, list_files: bool = True) -> Path:
        """Queue a :class:`topocli.reporting.html.Report`; it is rendered at commit.

        Rendering waits for :meth:`write_manifest` so the report can link the reports of the
        results folders it was made from. At commit the report's figures are written as
        ``figures/*.png`` (and ``*.svg``), its summary (if any) as ``summary.json``, and with
        ``list_files`` a last section lists every file of the folder as relative links.

        Returns
        -------
        Path
            Where the report will be (inside the temporary folder until commit).
        """
        rel = str(_check_relative(name))
        self._reports.append((report, rel, bool(list_files)))
        return self.path(rel)

    def _render_reports(self, manifest: Mapping[str, Any]) -> None:
        for report, rel, _ in self._reports:
            parent = PurePosixPath(rel).parent
            for fig_name, data in report.figure_files():
                self.write_bytes(str(parent / fig_name), data)
            if getattr(report, "summary", None) is not None:
                self.write_json(SUMMARY, summary_payload(manifest, report.summary))
            report.set_sources(source_links(manifest.get("inputs") or {}, self.out, rel))
        for report, rel, list_files in self._reports:
            if list_files:
                names = sorted({*self.files(), rel, MANIFEST, *(r for _, r, _ in self._reports)})
                report.add_file_list(names, title="Files in this folder")
            self.write_text(rel, report.render())
        self._reports = []

    def write_sheet_nifti(
        self,
        name: str | Path,
        values_units: np.ndarray,
        sheet: Any,
        names: Sequence[str] | None = None,
        stat: str | Sequence[str] | None = None,
        df: float | np.ndarray | None = None,
    ) -> Path:
        """Write one sheet map, or several, as NIfTI plus a JSON sidecar.

        Parameters
        ----------
        name : str or Path
            File name ending in ``.nii`` or ``.nii.gz``.
        values_units : ndarray of shape (n_units,) or (n_maps, n_units)
            One value per sheet unit (or one row per map). One row gives a 3-D image.
        sheet : Sheet
        names : sequence of str, optional
            Map names (default ``[stem]`` for one map, ``map0, map1, ...`` for several).
        stat : str or sequence of str, optional
            The statistic of the maps (one for all, or one per map), a key of
            :data:`MAP_INTENTS`: ``"t"``, ``"z"``, ``"p"``, ``"q"``, ``"label"``, ``"F"`` or
            ``"estimate"``. It sets the header's NIfTI intent when all maps share it.
        df : float or ndarray, optional
            Degrees of freedom of t maps: a number, one per map ``(n_maps,)``, or per unit
            ``(n_units,)`` / ``(n_maps, n_units)``. Where one value holds for every unit of
            every map it goes in the header (``intent_p1``); otherwise in the sidecar.

        Notes
        -----
        Image shape ``(cols, rows, 1)`` or ``(cols, rows, 1, n_maps)``: i = column, j = row;
        float32; NaN where no unit; affine ``diag(mm, -mm, mm, 1)`` (see the module notes).
        """
        import nibabel as nib

        fname = str(_check_relative(name))
        stem = nifti_stem(fname)
        values = np.asarray(values_units, dtype=np.float64)
        if values.ndim not in (1, 2) or values.shape[-1] != sheet.n_units:
            raise ValueError(
                f"expected ({sheet.n_units},) or (n_maps, {sheet.n_units}) values, "
                f"got {values.shape}"
            )
        values = np.atleast_2d(values)
        n_maps = values.shape[0]
        if names:
            map_names = [str(n) for n in names]
        else:
            map_names = (
                [PurePosixPath(stem).name] if n_maps == 1 else [f"map{i}" for i in range(n_maps)]
            )
        if len(map_names) != n_maps:
            raise ValueError(f"{len(map_names)} names for {n_maps} maps")
        stats = _map_stats(stat, n_maps)
        grid = sheet.to_grid(values).astype(np.float32)  # (M, R, C)
        data = np.transpose(grid, (2, 1, 0))[:, :, None, :]  # (C, R, 1, M)
        if n_maps == 1:
            data = data[..., 0]
        mm = float(sheet.mm_per_unit)
        img = nib.Nifti1Image(np.ascontiguousarray(data), sheet_affine(mm))
        img.header.set_xyzt_units("mm")
        img.header.set_data_dtype(np.float32)
        img.header["descrip"] = ("topo sheet i=col j=row: " + ",".join(map_names))[:79].encode(
            "ascii", "replace"
        )
        df_uniform, df_sidecar = _df_entries(df, n_maps, sheet.n_units, map_names, stats)
        _set_intent(img.header, stats, df_uniform)
        sheet_file = self._ensure_sheet(sheet)
        depth = len(PurePosixPath(fname).parts) - 1
        sidecar: dict[str, Any] = {
            "topo_sheet_map": 1,
            "maps": map_names,
            "stat": stats,
            "axes": "data[col, row, 0(, map)]: i = sheet column, j = sheet row; NaN = no unit",
            "orientation": "world x = x_mm, world y = -y_mm: row 0 at the top as in topo's figures",
            "mm_per_unit": mm,
            "grid_shape": list(sheet.grid_shape),
            "sheet_file": "../" * depth + sheet_file,
            "layout": sheet.layout,
        }
        if df_uniform is not None:
            sidecar["df"] = df_uniform
        elif df_sidecar is not None:
            sidecar["df"] = df_sidecar
        p = self.path(fname)
        nib.save(img, str(p))
        self.write_json(stem + ".json", sidecar)
        return p

    def _ensure_sheet(self, sheet: Any) -> str:
        if self._sheet is None:
            sheet.save(self.path(SHEET_FILE))
            self._sheet, self._sheet_file = sheet, SHEET_FILE
            return SHEET_FILE
        if sheet == self._sheet:
            return self._sheet_file  # type: ignore[return-value]
        raise ValueError("all sheet maps in one results folder must use the same sheet")

    def write_manifest(
        self,
        command: str,
        parameters: Mapping[str, Any] | None = None,
        inputs: Mapping[str, str | Path | Sequence[str | Path] | None] | None = None,
        seed: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Record what produced this folder; ``manifest.json`` is written when the block ends.

        Parameters
        ----------
        command : str
            The subcommand, e.g. ``"localize"``.
        parameters : mapping
            Every option as used (JSON-able after :func:`to_jsonable`).
        inputs : mapping of name -> path (or list of paths, or a plain id string)
            Files are hashed (sha256), folders get one hash over sorted relative paths and
            contents (:func:`sha256_tree`); strings that are not paths (hub ids) are recorded as
            references.
        seed : int, optional
        extra : mapping, optional
            Anything else worth keeping (model id, sheet summary, timings...).

        Notes
        -----
        Input hashes are computed now (inputs may change later); output hashes are computed at
        the end of the ``with`` block, just before the rename, over every file in the folder.
        """
        self._require_open()
        self._manifest = manifest_record(command, self.out, parameters, inputs, seed, extra)


def manifest_record(
    command: str,
    out: str | Path,
    parameters: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    seed: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``manifest.json`` without its ``outputs`` (see :meth:`ResultsFolder.write_manifest`)."""
    described: dict[str, Any] = {}
    for key, value in (inputs or {}).items():
        if value is None:
            described[key] = None
        elif isinstance(value, (str, os.PathLike)):
            described[key] = describe_input(value)
        else:
            described[key] = [describe_input(v) for v in value]
    return {
        "format": MANIFEST_FORMAT,
        "tool": "topo",
        "command": command,
        "argv": list(sys.argv),
        "created": utc_now_iso(),
        "seed": seed,
        "parameters": to_jsonable(dict(parameters or {})),
        "inputs": described,
        "versions": package_versions(),
        "platform": platform.platform(),
        "out": str(out),
        "extra": to_jsonable(dict(extra or {})),
    }


def list_outputs(folder: str | Path) -> list[dict[str, Any]]:
    """Every file under ``folder`` but the manifest: relative path, size and sha256."""
    root = Path(folder)
    rows = []
    for p in sorted(root.rglob("*"), key=lambda q: q.relative_to(root).as_posix()):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != MANIFEST and not p.name.startswith("."):
            rows.append({"path": rel, "bytes": p.stat().st_size, "sha256": sha256_file(p)})
    return rows


def write_folder_manifest(folder: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` into a folder managed outside :class:`ResultsFolder`.

    ``topo train``'s checkpoint folder is written step by step (and resumed), not in one
    atomic block; it still ends with a manifest like every results folder, listing the files
    it holds at the end.
    """
    record = dict(manifest)
    record["outputs"] = list_outputs(folder)
    return atomic_write_text(Path(folder) / MANIFEST, json_dumps(record))


def sheet_affine(mm_per_unit: float) -> np.ndarray:
    """The affine of topo's sheet maps: ``diag(mm, -mm, mm, 1)``.

    Voxel ``(col, row, 0)`` sits at world ``(x_mm, -y_mm, 0)``: the y axis is flipped because
    topo draws row 0 at the top while neuroimaging viewers draw +y (anterior) at the top.
    """
    mm = float(mm_per_unit)
    return np.diag([mm, -mm, mm, 1.0])


def _map_stats(stat: str | Sequence[str] | None, n_maps: int) -> list[str | None]:
    stats = [stat] * n_maps if stat is None or isinstance(stat, str) else list(stat)
    if len(stats) != n_maps:
        raise ValueError(f"{len(stats)} statistics for {n_maps} maps")
    unknown = [s for s in stats if s is not None and s not in MAP_INTENTS]
    if unknown:
        raise ValueError(f"unknown map statistic {unknown[0]!r} (one of {', '.join(MAP_INTENTS)})")
    return stats


def _df_entries(
    df: Any, n_maps: int, n_units: int, names: Sequence[str], stats: Sequence[str | None]
) -> tuple[float | None, Any]:
    """(the one df of every unit, or None; else the sidecar's per-map / per-unit df)."""
    if df is None:
        return None, None
    if any(s != "t" for s in stats):
        raise ValueError("df is only recorded for t maps")
    arr = np.asarray(df, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full((n_maps, n_units), float(arr))
    elif arr.shape == (n_maps,) and n_maps != n_units:
        arr = np.repeat(arr[:, None], n_units, axis=1)
    elif arr.shape == (n_units,):
        arr = np.broadcast_to(arr, (n_maps, n_units))
    elif arr.shape != (n_maps, n_units):
        raise ValueError(f"df of shape {arr.shape} fits neither the maps nor the units")
    finite = arr[np.isfinite(arr)]
    if finite.size and np.all(finite == finite[0]):
        return float(finite[0]), None
    per_map = {}
    for name, row in zip(names, arr, strict=True):
        ok = row[np.isfinite(row)]
        if ok.size and np.all(ok == ok[0]):
            per_map[name] = float(ok[0])
        else:  # Welch df differ per unit: 4 significant digits keep the sidecar small
            per_map[name] = [float(f"{v:.4g}") if np.isfinite(v) else None for v in row]
    return None, per_map


def _set_intent(header: Any, stats: Sequence[str | None], df: float | None) -> None:
    kinds = set(stats)
    if len(kinds) != 1 or None in kinds:
        return  # mixed statistics in one file: the sidecar's "stat" says which map is which
    code, label = MAP_INTENTS[stats[0]]  # type: ignore[index]
    params = (df,) if code == "t test" and df is not None else ()
    if code == "t test" and df is None:
        label = "t (df in sidecar)"
    header.set_intent(code, params, name=label)


def source_links(inputs: Mapping[str, Any], out: Path, report_rel: str = REPORT) -> list[dict]:
    """Links from a report to the reports of the results folders it was made from.

    Parameters
    ----------
    inputs : mapping
        The manifest's ``inputs`` (each a described input or a list of them).
    out : Path
        The final results folder (links are relative to where the report will be).
    report_rel : str
        The report's path inside ``out``.

    Returns
    -------
    list of dict
        ``{"input", "command", "href", "folder"}`` per distinct source folder that has a
        ``report.html``, in input order.
    """
    here = (Path(out) / report_rel).parent
    links, seen = [], set()
    for key, value in inputs.items():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, Mapping) or not item.get("path"):
                continue
            folder = _results_folder_of(Path(str(item["path"])))
            if folder is None or folder == Path(out) or folder in seen:
                continue
            seen.add(folder)
            command = None
            with contextlib.suppress(OSError, ValueError, AttributeError):
                command = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("command")
            links.append(
                {
                    "input": str(key),
                    "command": command,
                    "href": Path(os.path.relpath(folder / REPORT, here)).as_posix(),
                    "folder": folder.name,
                }
            )
    return links


def _results_folder_of(path: Path, depth: int = 4) -> Path | None:
    """The results folder holding ``path`` (itself or a parent) if it has a report."""
    for folder in [path, *list(path.parents)[:depth]]:
        if (folder / MANIFEST).is_file():
            return folder.resolve() if (folder / REPORT).is_file() else None
    return None


def summary_payload(manifest: Mapping[str, Any], summary: Mapping[str, Any]) -> dict:
    """``summary.json``: the command's printed summary with what identifies the run."""
    return {
        "format": 1,
        "tool": "topo",
        "command": manifest.get("command"),
        "created": manifest.get("created"),
        "summary": to_jsonable(dict(summary)),
    }


def nifti_stem(name: str) -> str:
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise ValueError(f"sheet map names end in .nii or .nii.gz: {name!r}")
