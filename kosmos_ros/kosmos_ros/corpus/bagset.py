# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The bags a run covers: the ones given now, and the earlier ones its folder still holds.

The folder follows the content at each path: a bag of an earlier invocation whose path now
holds other content (re-recorded), or cannot be read, has its rows and outputs dropped, and
said so; one whose path is gone (a disk not mounted) keeps them; one still there is covered
again (done, or redone when its outputs are damaged).
"""

from __future__ import annotations

from pathlib import Path
import time
from typing import Any

from kosmos_ros.corpus.folder import RunFolder
from kosmos_ros.corpus.inputs import BagInput, describe_bag
from kosmos_ros.corpus.progress import Progress


class BagSet:
    """Collects a run's bags; records failures in ``records`` and drops in ``notes``."""

    def __init__(self, folder: RunFolder, earlier: list[dict[str, Any]],
                 records: dict[str, dict[str, Any]], notes: list[str], progress: Progress):
        self.folder, self.earlier, self.records = folder, earlier, records
        self.notes, self.progress = notes, progress

    def collect(self, paths: list[Path]) -> list[BagInput]:
        """Describe the bags given, then the earlier bags the folder holds (or drop them)."""
        known = {r['path']: r for r in self.earlier if 'sha256' in r}
        bags: list[BagInput] = []
        started = time.monotonic()
        self.progress.phase(f'hashing {len(paths)} bags (unchanged ones by size and time)')
        for path in paths:
            try:
                bags.append(describe_bag(path, known))
            except OSError as exc:
                self.records[str(path)] = {'path': str(path), 'status': 'failed',
                                           'reason': f'cannot read: {exc}'}
        self.progress.phase(f'hashed {len(bags)} bags, {sum(b.size for b in bags) / 1e6:.1f} MB '
                            f'in {time.monotonic() - started:.1f} s')
        given = {str(b.path) for b in bags}
        ids = {b.bag_id for b in bags}
        shas = {b.sha256 for b in bags}
        for record in self.earlier:
            bag_id = record.get('bag_id')
            if not bag_id or bag_id in ids:
                continue
            if record['path'] in self.records:
                self._drop(record, 'it cannot be read now')
            elif record['path'] in given:
                self._drop(record, 'its content changed since it was grounded')
            elif record['status'] != 'done':
                continue
            elif record['sha256'] in shas:
                self._drop(record, 'the same content is given now at another path')
            else:
                bag = self._earlier_bag(record, known)
                if bag is not None:
                    bags.append(bag)
                    ids.add(bag.bag_id)
        return bags

    def _earlier_bag(self, record: dict[str, Any], known: dict) -> BagInput | None:
        """Return an earlier bag not given now, if its path still holds its content.

        Its outputs are kept (and, when damaged, grounded again). When its path is gone (a
        disk not mounted, say), its record and rows stay as they are; when the path holds
        other content, they are dropped.
        """
        path = Path(record['path'])
        if not (path.exists() or path.is_symlink()):
            if self.folder.part_ok(record['bag_id']):
                self.records[record['bag_id']] = dict(record)
            else:
                self._drop(record, 'its index part or output is damaged and the bag is gone')
            return None
        try:
            bag = describe_bag(path, known)
        except OSError as exc:
            self._drop(record, f'it cannot be read now ({exc})')
            return None
        if bag.sha256 != record['sha256']:
            self._drop(record, 'its content changed since it was grounded (give it again to '
                               'ground its new content)')
            return None
        return bag

    def _drop(self, record: dict[str, Any], why: str) -> None:
        """Remove an earlier bag's outputs, chunks and plan; say so when it had rows."""
        self.folder.clear(record['bag_id'], everything=True)
        if record.get('status') == 'done':
            self.notes.append(f'dropped: {record["path"]} ({record["bag_id"]}): {why}; '
                              f'its {record.get("rows", 0)} index rows and its output bag '
                              'were removed')
