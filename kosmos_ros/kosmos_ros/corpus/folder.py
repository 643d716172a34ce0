# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The files of a run folder, each read back as untrusted data.

::

    RUN/manifest.json            the run's state (:mod:`.manifest`)
    RUN/plans/<bag id>.json      a bag's chunks (:class:`~.plan.BagPlan`)
    RUN/chunks/<bag id>/<n>.json a finished chunk's results (:mod:`.chunks`)
    RUN/bags/<bag id>/           a finished bag's output (written in bags/.partial/<bag id>/)
    RUN/index/<bag id>.parquet   a finished bag's index rows
    RUN/index.parquet            the merged index

Every file is written whole (a temporary file renamed into place). Whatever is read back may
have been damaged or edited since: a plan, chunk or index part that is not what the run wrote
is removed and its work done again (:meth:`RunFolder.chunk`, :meth:`RunFolder.plan`,
:meth:`RunFolder.part_ok`); bag ids come from a checked manifest, so no path leaves the folder.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
import shutil
from typing import Any

from kosmos_ros.corpus import chunks, CorpusError, index, manifest
from kosmos_ros.corpus.chunks import ChunkResult
from kosmos_ros.corpus.inputs import run_folder_above
from kosmos_ros.corpus.plan import BagPlan, Chunk

SUBFOLDERS = ('plans', 'chunks', 'bags', 'index')
PARTIAL = '.partial'  # bags/.partial/<bag id>/: an output bag being written


def atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _remove_link(path: Path) -> None:
    """Remove a symbolic link the run did not write (never what it points to)."""
    if path.is_symlink():
        path.unlink()


class RunFolder:
    """Paths and checked reads of one run folder."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def make(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for name in SUBFOLDERS:
            (self.root / name).mkdir(exist_ok=True)

    # -- paths ---------------------------------------------------------------------------------

    def chunk_path(self, chunk: Chunk) -> Path:
        return self.root / 'chunks' / chunk.bag_id / f'{chunk.index:06d}{chunks.SUFFIX}'

    def plan_path(self, bag_id: str) -> Path:
        return self.root / 'plans' / f'{bag_id}.json'

    def part(self, bag_id: str) -> Path:
        return self.root / 'index' / f'{bag_id}.parquet'

    def output(self, bag_id: str) -> Path:
        return self.root / 'bags' / bag_id

    def partial_part(self, bag_id: str) -> Path:
        """Where a bag's index part is written before it is renamed to :meth:`part`."""
        return self.root / 'bags' / PARTIAL / f'{bag_id}.parquet'

    def partial(self, bag_id: str) -> Path:
        """Where a bag's output is written before it is renamed to :meth:`output`.

        A folder named as the bag id, so the storage file inside keeps its final name.
        """
        return self.root / 'bags' / PARTIAL / bag_id

    # -- chunks and plans ----------------------------------------------------------------------

    def save_chunk(self, chunk: Chunk, result: ChunkResult) -> None:
        path = self.chunk_path(chunk)
        path.parent.mkdir(exist_ok=True)
        atomic_bytes(path, chunks.dump(result))

    def chunk(self, chunk: Chunk) -> ChunkResult | None:
        """Return a saved chunk; None (and the file removed) when absent or damaged."""
        path = self.chunk_path(chunk)
        try:
            if path.is_symlink() or not path.is_file():
                _remove_link(path)
                return None
            return chunks.load(path.read_bytes(), chunk.bag_id, chunk.index)
        except (OSError, chunks.DamagedChunk):
            path.unlink(missing_ok=True)
            return None

    def has_chunk(self, chunk: Chunk) -> bool:
        return self.chunk(chunk) is not None

    def plan(self, bag_id: str, path: str) -> BagPlan | None:
        """Return the saved plan of the bag at ``path``; None (and removed) when unusable."""
        cached = self.plan_path(bag_id)
        if cached.is_symlink() or not cached.is_file():
            _remove_link(cached)
            return None
        try:
            plan = BagPlan.from_record(json.loads(cached.read_text(encoding='utf-8')))
            if plan.bag_id == bag_id and plan.path == path and all(
                    c.bag_id == bag_id and c.index == i for i, c in enumerate(plan.chunks)):
                return plan
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            pass
        cached.unlink(missing_ok=True)
        return None

    def save_plan(self, plan: BagPlan) -> None:
        atomic_bytes(self.plan_path(plan.bag_id), json.dumps(plan.record()).encode())

    # -- finished bags -------------------------------------------------------------------------

    def part_ok(self, bag_id: str) -> bool:
        """Return whether a bag's index part and output folder are whole."""
        part = self.part(bag_id)
        if part.is_symlink() or not part.is_file() or not self.output(bag_id).is_dir():
            return False
        try:
            index.check_part(index.read_part(part))
        except index.DamagedIndex:
            return False
        return True

    def clear(self, bag_id: str, everything: bool = False) -> None:
        """Remove a bag's outputs (and with ``everything``, its plan and chunks too)."""
        for path in (self.partial(bag_id), self.output(bag_id)):
            if path.is_symlink():
                path.unlink()
            elif path.exists():
                shutil.rmtree(path)
        self.part(bag_id).unlink(missing_ok=True)
        self.partial_part(bag_id).unlink(missing_ok=True)
        if everything:
            self.plan_path(bag_id).unlink(missing_ok=True)
            folder = self.root / 'chunks' / bag_id
            if folder.is_symlink():
                folder.unlink()
            elif folder.exists():
                shutil.rmtree(folder)

    def tidy(self) -> None:
        """Remove what is left of outputs being written (when no bag is being written)."""
        partial = self.root / 'bags' / PARTIAL
        if partial.is_symlink():
            partial.unlink()
        elif partial.exists():
            shutil.rmtree(partial)

    def publish(self, bag_id: str) -> Path:
        """Rename a bag's finished output and index part into place; return the output."""
        final = self.output(bag_id)
        os.replace(self.partial(bag_id), final)
        os.replace(self.partial_part(bag_id), self.part(bag_id))
        return final


class FolderLock:
    """An exclusive lock on the run folder (released by the OS if the process dies)."""

    def __init__(self, folder: Path):
        self.path = folder / '.lock'
        self.file: Any = None

    def __enter__(self) -> FolderLock:
        self.file = open(self.path, 'a+')
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise CorpusError(f'another run is using {self.path.parent}') from None
        return self

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


# What a run creates before its manifest (a run that stopped there, e.g. on a model that
# could not be loaded, leaves only these, and may be run again).
_SKELETON = {'plans', 'chunks', 'bags', 'index', '.lock'}


def check_folder(out: Path) -> None:
    """Refuse a run folder that is a file, lies in another run folder, or holds something else."""
    if out.exists() and not out.is_dir():
        raise CorpusError(f'the run folder {out} exists and is not a folder')
    other = run_folder_above(out.parent)
    if other is not None:
        raise CorpusError(f'the run folder {out} lies inside the run folder {other}; a run '
                          "folder holds only its run's own files: choose another place")
    if out.is_dir() and manifest.read(out) is None and \
            any(p.name not in _SKELETON for p in out.iterdir()):
        raise CorpusError(f'{out} exists, is not empty and holds no corpus run; choose a new '
                          'run folder')
