"""Folders built once and reused while what decides them is unchanged.

The tiny model (`tiny.py`), the demo's pretrained base and the sanity task's warmed-up base each live
in a folder with a record file holding a fingerprint of everything that decides the build. A build
with the same fingerprint returns at once; any other is written into a staging folder beside the
target and swapped in, so a crash never leaves a folder that looks finished, and parallel builders
of one folder (test sessions sharing a cache) wait for each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from medrlvr_trl.user_errors import UserError


def package_versions() -> dict[str, str]:
    """The versions a build depends on, read from package metadata (importing torch costs seconds)."""
    return {name: importlib.metadata.version(name) for name in ("transformers", "tokenizers", "torch")}


def fingerprint_of(payload: dict[str, Any]) -> str:
    """The fingerprint of what decides a build (the same payload always gives the same string)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def stored_record(folder: Path, record_file: str) -> dict[str, Any]:
    """The folder's record, or {} when it has none or it is unreadable."""
    try:
        record = json.loads((folder / record_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def build_once(
    folder: str | Path,
    fingerprint: str,
    build: Callable[[Path], dict[str, Any]],
    *,
    record_file: str,
    what: str,
) -> tuple[dict[str, Any], bool]:
    """(record, rebuilt): the folder's record if it holds `fingerprint`, else `build(staging)`'s.

    `build` writes the folder's contents into `staging` and returns what to record beside the
    fingerprint. A non-empty folder without a record is never replaced (`what` names the expected kind).
    """
    folder = Path(folder)
    if (record := stored_record(folder, record_file)).get("fingerprint") == fingerprint:
        return record, False
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(folder.parent / f".{folder.name}.lock"):
        if (record := stored_record(folder, record_file)).get("fingerprint") == fingerprint:
            return record, False  # another process finished it while we waited
        if folder.exists() and any(folder.iterdir()) and not (folder / record_file).is_file():
            raise UserError(
                f"{folder} exists and is not a {what} build folder (no {record_file}); "
                "choose an empty or new folder, or remove it"
            )
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-building-", dir=folder.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; the finished build is an ordinary folder
        try:
            record = {"fingerprint": fingerprint, **build(staging)}
            (staging / record_file).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            _swap_into_place(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return record, True


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: builds still never expose a half-written folder
        yield
        return
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _swap_into_place(staging: Path, folder: Path) -> None:
    if folder.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}-old-", dir=folder.parent))
        os.replace(folder, retired / folder.name)
        os.replace(staging, folder)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, folder)


@contextlib.contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the caller's count.

    A trained build is bit-identical only at one thread count: another count sums in another order,
    so one spec would give weights that differ in their last bits (two builds of the demo base ended
    at loss 1.1286 and 1.1299) while the fingerprint calls them the same build. One thread is also the
    faster setting for the project's tiny models on a busy machine.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
