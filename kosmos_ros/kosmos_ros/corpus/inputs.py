# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The bags of a corpus: found in folders, globs and lists, sized and hashed.

A bag is a rosbag2 folder (one holding ``metadata.yaml``), a ``.mcap`` or ``.db3`` file
outside such a folder, or a ROS 1 ``.bag`` file. Folders are searched recursively (a rosbag2
folder is one bag; nothing inside it is searched), in sorted order. Every bag is identified by
the SHA-256 of its content (a folder's: of its files' names and hashes), so a bag given twice,
or copied, is grounded once.

One rule for symbolic links: a path given (on the command line, in a list file) is followed,
as the user named it; a link met while searching a folder or expanding a pattern, to a file or
to a folder, is not followed, and is recorded as a problem with its target. Run folders (this
run's, and any other kosmos_corpus run's) are never searched and never inputs: another run's
output bags are not a corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
import glob
import hashlib
import os
from pathlib import Path
import re
from typing import Iterable, Mapping

from kosmos_ros.bag.reading import BAG_SUFFIXES
from kosmos_ros.corpus.manifest import is_run_folder

_GLOB_CHARS = re.compile(r'[*?\[]')
_BLOCK = 1 << 20


@dataclass(frozen=True)
class BagInput:
    """One bag of the corpus: where it is, its size, modification time and content hash."""

    path: Path
    size: int
    mtime_ns: int
    sha256: str

    @property
    def bag_id(self) -> str:
        """Return a name for the bag's outputs: its stem and the start of its hash."""
        stem = re.sub(r'[^A-Za-z0-9._-]+', '_', self.path.stem or self.path.name).strip('._')
        return f'{stem[:60] or "bag"}-{self.sha256[:12]}'

    def record(self) -> dict:
        return {'path': str(self.path), 'size': self.size, 'mtime_ns': self.mtime_ns,
                'sha256': self.sha256, 'bag_id': self.bag_id}


def is_rosbag2_folder(path: Path) -> bool:
    return path.is_dir() and (path / 'metadata.yaml').is_file()


LINK = 'a symbolic link (to {target}): links met while searching are not followed; give it ' \
    'by name to use it'
RUN_FOLDER = 'inside the kosmos_corpus run folder {folder}: run folders are never inputs'


def _link_problem(path: Path) -> tuple[str, str]:
    try:
        target = os.readlink(path)
    except OSError as exc:
        target = f'unreadable: {exc.strerror}'
    return str(path), LINK.format(target=target)


def _walk(folder: Path, exclude: Path | None,
          problems: list[tuple[str, str]]) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder, followlinks=False):
        here = Path(root)
        if exclude is not None and inside(here, exclude):
            dirs[:] = []
            continue
        if here != folder and is_run_folder(here):
            problems.append((str(here), 'a kosmos_corpus run folder: not searched (run '
                                        'folders are never inputs)'))
            dirs[:] = []
            continue
        if (here / 'metadata.yaml').is_file() and here != folder:
            dirs[:] = []
            yield here
            continue
        dirs.sort()
        for name in dirs:
            if (here / name).is_symlink():
                problems.append(_link_problem(here / name))
        dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
        for name in sorted(files):
            path = here / name
            if not name.endswith(BAG_SUFFIXES):
                continue
            if path.is_symlink():
                problems.append(_link_problem(path))
            elif path.is_file():  # no FIFO, no device
                yield path


def run_folder_above(path: Path) -> Path | None:
    """Return the corpus run folder that ``path`` is or lies in (links resolved), if any."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return None
    for folder in (resolved, *resolved.parents):
        if is_run_folder(folder):
            return folder
    return None


def _linked_below(match: Path, base: Path) -> Path | None:
    """Return the first symbolic link on the way from ``base`` down to ``match``, if any."""
    try:
        parts = match.relative_to(base).parts
    except ValueError:
        return None
    here = base
    for part in parts:
        here = here / part
        if here.is_symlink():
            return here
    return None


def _pattern_base(text: str) -> Path:
    """Return the folder a glob pattern starts from (its part before the first wildcard)."""
    head = _GLOB_CHARS.split(os.path.expanduser(text), 1)[0]
    return Path(head if head.endswith(os.sep) else os.path.dirname(head) or '.')


def inside(path: Path, folder: Path) -> bool:
    """Return whether ``path`` is ``folder`` or lies in it (links resolved)."""
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def find_bags(inputs: Iterable[str], exclude: Path | None = None,
              ) -> tuple[list[Path], list[tuple[str, str]]]:
    """Return the bags the inputs name (resolved, in order, once each) and the problems.

    Each input is a bag, a folder searched recursively, or a glob (``**`` included). A
    problem is ``(input, reason)``: a path that does not exist, a glob matching nothing, a
    file that is not a bag, a folder holding none, a link met while searching, a run folder.
    ``exclude`` (this run's folder) is left out silently.
    """
    found: list[Path] = []
    problems: list[tuple[str, str]] = []
    for text in inputs:
        path = Path(text).expanduser()
        if not path.exists() and _GLOB_CHARS.search(text):
            base = _pattern_base(text)
            matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(text),
                                                         recursive=True))]
            bags, links = [], 0
            for m in matches:
                if not (is_rosbag2_folder(m) or m.name.endswith(BAG_SUFFIXES)):
                    continue
                link = _linked_below(m, base)
                if link is not None:
                    problems.append(_link_problem(link))
                    links += 1
                elif m.is_file() and is_rosbag2_folder(m.parent):
                    bags.append(m.parent)  # a storage file of a rosbag2 folder: the bag
                elif is_rosbag2_folder(m) or m.is_file():
                    bags.append(m)
            if not bags and not links:
                problems.append((text, 'the pattern matches no bag'))
            found.extend(bags)
            continue
        if not path.exists():
            problems.append((text, 'no such file or folder'))
        elif is_rosbag2_folder(path):
            found.append(path)
        elif path.is_dir():
            bags = list(_walk(path, exclude, problems))
            if not bags:
                problems.append((text, 'the folder holds no bag (rosbag2 folder, .mcap, .db3 '
                                       'or .bag)'))
            found.extend(bags)
        elif not path.is_file():
            problems.append((text, 'not a regular file (a FIFO, socket or device)'))
        elif path.name.endswith(BAG_SUFFIXES):
            found.append(path)
        else:
            problems.append((text, 'not a bag: expected a rosbag2 folder or a .mcap, .db3 or '
                                   '.bag file'))
    unique: dict[Path, None] = {}
    for path in found:
        resolved = path.resolve()
        if exclude is not None and inside(resolved, exclude):
            continue
        folder = run_folder_above(resolved)
        if folder is not None:
            problems.append((str(path), RUN_FOLDER.format(folder=folder)))
            continue
        unique.setdefault(resolved, None)
    return list(unique), problems


def read_list(path: Path) -> list[str]:
    """Return the entries of a list file: one bag, folder or glob per line; ``#`` comments."""
    lines = path.read_text(encoding='utf-8').splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith('#')]


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob('*') if p.is_file())
    return [path]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def describe_bag(path: Path, known: Mapping[str, Mapping] | None = None) -> BagInput:
    """Return the bag's size, modification time and SHA-256; OSError when unreadable.

    ``known`` (path -> an earlier :meth:`BagInput.record`) skips hashing a bag whose size and
    modification time have not changed since.
    """
    files = _files(path)
    size = sum(f.stat().st_size for f in files)
    mtime_ns = max((f.stat().st_mtime_ns for f in files), default=0)
    earlier = (known or {}).get(str(path))
    if earlier and earlier.get('size') == size and earlier.get('mtime_ns') == mtime_ns:
        return BagInput(path, size, mtime_ns, str(earlier['sha256']))
    if path.is_dir():
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.relative_to(path).as_posix().encode() + b'\0')
            digest.update(_sha256_file(f).encode() + b'\n')
        sha = digest.hexdigest()
    else:
        sha = _sha256_file(path)
    return BagInput(path, size, mtime_ns, sha)
