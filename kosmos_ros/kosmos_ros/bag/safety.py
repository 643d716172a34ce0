# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""What keeps ``ground_bag`` from harming its input, and its output whole.

- :func:`check_outputs`: before anything is written or deleted, refuse output paths (the
  output bag folder, the HTML report, the folder of frames beside it) that are, hold or lie
  inside the input bag (the file given, and the rosbag2 folder it is in) or each other, after
  resolving relative paths, ``..`` and symbolic links, and through hard links and bind mounts
  (same device and inode); and destinations that cannot be used (under a regular file, an
  existing output without ``--overwrite``, a folder that is not a rosbag2 bag).
- :class:`SigintGuard`: Ctrl-C (or SIGTERM) stops the work, but never cuts short the writing
  of a frame's results or the closing of the output bag, however often it comes.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
import os
from pathlib import Path
import signal
import threading
from typing import Any, Iterator, Sequence

from kosmos_ros.bag import BagError
from kosmos_ros.bag.report import frames_folder

FRAMES = 'the folder of report frames'
NOT_INTO_INPUT = '; ground_bag never writes into its input: choose another path'


@dataclass(frozen=True)
class Place:
    """A path the tool reads or writes, with its role for messages (``the output bag``)."""

    role: str
    path: Path


@dataclass(frozen=True)
class _Located:
    """A path resolved to its absolute real form, with its (device, inode) when it exists."""

    path: Path
    inode: tuple[int, int] | None

    @classmethod
    def of(cls, path: Path) -> _Located:
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop (3.11)
            raise BagError(f'cannot resolve {path}: {exc}') from None
        try:
            stat = resolved.stat()
        except OSError:
            return cls(resolved, None)
        return cls(resolved, (stat.st_dev, stat.st_ino))

    def same(self, other: _Located) -> bool:
        return self.path == other.path or (self.inode is not None and self.inode == other.inode)

    def inside(self, other: _Located) -> bool:
        return any(_Located.of(parent).same(other) for parent in self.path.parents)


def overlap(a: Path, b: Path) -> str | None:
    """Return how ``a`` overlaps ``b``: 'is', 'is inside' or 'contains'; None when apart."""
    first, second = _Located.of(a), _Located.of(b)
    if first.same(second):
        return 'is'
    if first.inside(second):
        return 'is inside'
    if second.inside(first):
        return 'contains'
    return None


def input_places(bag: Path) -> list[Place]:
    """Return the input: the bag given and, for a file in a rosbag2 folder, that folder."""
    if bag.is_dir():
        return [Place('the input bag folder', bag)]
    places = [Place('the input bag file', bag)]
    folders = {}
    for folder in (bag.parent, _Located.of(bag).path.parent):  # as given, and as linked to
        if (folder / 'metadata.yaml').is_file():
            folders.setdefault(_Located.of(folder).path, folder)
    places.extend(Place('the input bag folder', folder) for folder in folders.values())
    return places


def output_places(output: Path, html: Path | None, html_embed: bool) -> list[Place]:
    """Return every path a run writes: the output bag, the HTML report and its frames."""
    places = [Place('the output bag', output)]
    if html is not None:
        if html.name in ('', '.', '..'):
            raise BagError(f'the HTML report {html} names a folder; name a file')
        places.append(Place('the HTML report', html))
        if not html_embed:
            places.append(Place(FRAMES, frames_folder(html)))
    return places


def check_outputs(bag: Path, output: Path, html: Path | None = None, html_embed: bool = False,
                  overwrite: bool = False) -> None:
    """Raise BagError when an output path would harm the input or another output, or is unusable.

    Nothing is written or deleted here; call it before the run writes anything.
    """
    inputs = input_places(Path(bag))
    outputs = output_places(Path(output), Path(html) if html else None, html_embed)
    for index, place in enumerate(outputs):
        check_apart(place, inputs, NOT_INTO_INPUT)
        check_apart(place, outputs[:index], '; choose paths apart from each other')
        check_destination(place)
    _check_replaceable(outputs[0].path, overwrite)
    for place in outputs[1:]:
        _check_kind(place)


def check_apart(place: Place, others: Sequence[Place], advice: str) -> None:
    for other in others:
        relation = overlap(place.path, other.path)
        if relation is not None:
            raise BagError(f'{place.role} {place.path} {relation} {other.role} {other.path}'
                           + advice)


def check_destination(place: Place) -> None:
    """Refuse a place whose nearest existing path above it is a file, not a folder."""
    for parent in _Located.of(place.path).path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BagError(f'cannot write {place.role} {place.path}: {parent} is a file, '
                               'not a folder')
            return


def _check_replaceable(output: Path, overwrite: bool) -> None:
    """Refuse to replace an existing output without ``overwrite``, or one not a rosbag2 bag."""
    if not (output.exists() or output.is_symlink()):
        return
    if not overwrite:
        raise BagError(f'output {output} exists already; choose another or pass --overwrite')
    if output.is_symlink():
        raise BagError(f'refusing to overwrite {output}: it is a symbolic link (to '
                       f'{os.readlink(output)}); name the folder itself')
    if not (output / 'metadata.yaml').is_file():
        raise BagError(f'refusing to overwrite {output}: it is not a rosbag2 folder')


def _check_kind(place: Place) -> None:
    """Refuse an HTML report that is a folder, or a folder of its frames that is a file."""
    wants_folder = place.role == FRAMES
    if place.path.exists() and place.path.is_dir() != wants_folder:
        kind = 'a folder; name a file' if place.path.is_dir() else 'a file, not a folder'
        raise BagError(f'{place.role} {place.path} is {kind}')


class SigintGuard:
    """Ctrl-C or SIGTERM while grounding: the first stops the work; none breaks the output.

    While entered (on the main thread, where Python runs signal handlers), SIGINT (when it
    has Python's default handler) and SIGTERM (when it has the default action: systemd,
    ``docker stop`` and ``timeout`` send it) are handled alike: the first raises
    KeyboardInterrupt at once, unless it comes inside :meth:`shield` (a frame's results being
    written, the output bag being opened or closed): then it is recorded in ``requested`` and
    :meth:`check` raises it where the caller can stop cleanly. Every later one is ignored, so
    the output is closed whole however often they come. Entering again (nested) is allowed.

    ``ignore_after``: after a signal, leave both ignored on exit instead of restoring the
    defaults, for a command line on its way out (a Ctrl-C during interpreter shutdown would
    otherwise print a traceback).
    """

    SIGNALS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}

    def __init__(self, ignore_after: bool = False):
        self.ignore_after = ignore_after
        self.requested = False
        self._deferred = False
        self._shields = 0
        self._depth = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SigintGuard:
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for signum, default in self.SIGNALS.items():
                if signal.getsignal(signum) is default:
                    self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            for signum, previous in self._previous.items():
                keep = signal.SIG_IGN if self.ignore_after and self.requested else previous
                signal.signal(signum, keep)
            self._previous = {}

    @property
    def active(self) -> bool:
        """Whether SIGINT is handled here now (entered, on the main thread, default before)."""
        return signal.SIGINT in self._previous

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.requested:
            return
        self.requested = True
        # Also when raised at once: an exception raised in a finaliser (``__del__``) is lost,
        # and :meth:`check` then raises it where the run looks next.
        self._deferred = True
        if not self._shields:
            raise KeyboardInterrupt

    @contextmanager
    def shield(self) -> Iterator[None]:
        """Defer a first SIGINT until the block is done (later ones are ignored anyway)."""
        self._shields += 1
        try:
            yield
        finally:
            self._shields -= 1

    def check(self) -> None:
        """Raise KeyboardInterrupt (once) for a signal deferred by :meth:`shield` (or lost)."""
        if self._deferred:
            self._deferred = False
            raise KeyboardInterrupt
