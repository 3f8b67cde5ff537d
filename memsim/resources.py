"""Find shipped profiles, layouts and bank presets by name, or user files by path."""

from __future__ import annotations

from pathlib import Path

from memsim.errors import InputError, scrub_userinfo

_PACKAGE = Path(__file__).resolve().parent
_KINDS = {
    "device_profiles": "profile",
    "layouts": "layout",
    "banks": "bank",
    "workloads": "workload",
    "sweeps": "sweep spec",
}


def shipped_dir(kind: str) -> Path:
    """Folder of shipped files of `kind` (device_profiles, layouts, banks, workloads,
    sweeps)."""
    if kind in ("banks", "workloads", "sweeps"):
        return _PACKAGE / "presets" / kind
    installed = _PACKAGE / "_shipped" / kind  # inside a wheel
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / kind  # a checkout or an editable install


def shipped_names(kind: str) -> list[str]:
    """Names of the shipped files of `kind`, sorted."""
    folder = shipped_dir(kind)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


MAX_PATH_CHARS = 4096  # PATH_MAX on Linux
MAX_NAME_CHARS = 255  # NAME_MAX: one component of a path


def checked_path(ref: str | Path, *, file: str | Path | None = None, line: int | None = None,
                 field: str | None = None) -> Path:
    """`ref` as a Path the OS can be asked about: NUL bytes and over-long names (which make
    `Path.exists` raise instead of answering) become one InputError naming `ref`, or `field`
    of `file` when the name comes from inside a file."""
    text = str(ref)
    problem = None
    if "\0" in text:
        problem = "contains a NUL byte"
    elif len(text) > MAX_PATH_CHARS or any(len(p) > MAX_NAME_CHARS for p in text.split("/")):
        problem = "is too long for a file name"
    elif not text.strip():
        problem = "is empty"
    if problem:
        shown = scrub_userinfo(text.replace("\0", "\\0"))
        shown = repr(shown if len(shown) <= 60 else shown[:60] + "...")
        if file is None and field is None:
            raise InputError(f"the path {problem}", file=shown)
        raise InputError(f"path {shown} {problem}", file=file, line=line, field=field)
    return Path(text)


def is_file(path: Path) -> bool:
    """`path.is_file()`, answering False instead of raising for paths the OS refuses."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def resolve(ref: str | Path, kind: str) -> Path:
    """A path for `ref`: an existing file, or the shipped file of that name."""
    path = checked_path(ref)
    if is_file(path):
        return path
    name = str(ref)
    if "/" not in name and "\\" not in name and not name.startswith("."):
        stem = name[:-5] if name.endswith(".yaml") else name
        for candidate in shipped_names(kind):
            if candidate.lower() == stem.lower():
                return shipped_dir(kind) / f"{candidate}.yaml"
    try:
        exists = path.exists()
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot be read: {getattr(exc, 'strerror', None) or exc}",
                         file=path) from None
    if exists:
        raise InputError("is a directory or not a regular file", file=path)
    names = ", ".join(shipped_names(kind)) or "none"
    raise InputError(
        f"no such file, and no shipped {_KINDS.get(kind, kind)} of that name (shipped: {names})",
        file=ref,
    )
