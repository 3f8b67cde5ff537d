"""Find shipped profiles, layouts and bank presets by name, or user files by path."""

from __future__ import annotations

from pathlib import Path

from memsim.errors import InputError

_PACKAGE = Path(__file__).resolve().parent
_KINDS = {
    "device_profiles": "profile",
    "layouts": "layout",
    "banks": "bank",
    "workloads": "workload",
}


def shipped_dir(kind: str) -> Path:
    """Folder of shipped files of `kind` (device_profiles, layouts, banks, workloads)."""
    if kind in ("banks", "workloads"):
        return _PACKAGE / "presets" / kind
    installed = _PACKAGE / "_shipped" / kind  # inside a wheel
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / kind  # a checkout or an editable install


def shipped_names(kind: str) -> list[str]:
    """Names of the shipped files of `kind`, sorted."""
    folder = shipped_dir(kind)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def resolve(ref: str | Path, kind: str) -> Path:
    """A path for `ref`: an existing file, or the shipped file of that name."""
    path = Path(ref)
    if path.is_file():
        return path
    name = str(ref)
    if "/" not in name and "\\" not in name and not name.startswith("."):
        stem = name[:-5] if name.endswith(".yaml") else name
        for candidate in shipped_names(kind):
            if candidate.lower() == stem.lower():
                return shipped_dir(kind) / f"{candidate}.yaml"
    if path.exists():
        raise InputError("is not a file", file=path)
    names = ", ".join(shipped_names(kind)) or "none"
    raise InputError(
        f"no such file, and no shipped {_KINDS.get(kind, kind)} of that name (shipped: {names})",
        file=ref,
    )
