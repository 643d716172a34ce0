# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Where ``search --output`` and ``compare --json/--html`` may write: never over what they read.

As ``ground_bag`` checks its own outputs (:mod:`kosmos_ros.bag.safety`), before anything is
written: an output file must not be, hold or lie inside an input (the run folders and index
files given, the bags their indexes name, the bags and run folder of ``--find``), nor another
output of the same command, after resolving links (and through hard links); it must not lie in
any corpus run folder (a run's own files are the run's), nor be an existing bag or folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from kosmos_ros.bag import BagError
from kosmos_ros.bag.reading import BAG_SUFFIXES
from kosmos_ros.bag.safety import check_apart, check_destination, Place
from kosmos_ros.corpus import CorpusError
from kosmos_ros.corpus.inputs import is_rosbag2_folder, run_folder_above

NEVER_INPUT = '; outputs never replace what the command reads: choose another path'


def bag_places(bags: Iterable[str]) -> list[Place]:
    """Return the bags an index names (each once), as inputs."""
    return [Place('the input bag', Path(b)) for b in sorted({b for b in bags if b})]


def check_outputs(outputs: Sequence[Place], inputs: Sequence[Place]) -> None:
    """Raise CorpusError when an output path would harm an input or another output."""
    try:
        for i, place in enumerate(outputs):
            check_apart(place, inputs, NEVER_INPUT)
            check_apart(place, outputs[:i], '; choose paths apart from each other')
            check_destination(place)
            _check_file(place)
    except BagError as exc:
        raise CorpusError(str(exc)) from None


def _check_file(place: Place) -> None:
    path = place.path
    if path.name in ('', '.', '..') or path.is_dir():
        raise CorpusError(f'{place.role} {path} is a folder; name a file')
    if is_rosbag2_folder(path.parent) or (path.exists() and path.name.endswith(BAG_SUFFIXES)):
        raise CorpusError(f'{place.role} {path} is or lies in a bag{NEVER_INPUT}')
    folder = run_folder_above(path.parent)
    if folder is not None:
        raise CorpusError(f'{place.role} {path} lies in the corpus run folder {folder}; a run '
                          f"folder holds only the run's own files{NEVER_INPUT}")
