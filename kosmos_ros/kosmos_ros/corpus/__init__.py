# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Regression testing on a corpus of bags: ground, index, search and compare (ROS-free).

A *run* grounds every bag of a corpus (folders, globs or a list of bags) with the engine,
admission rule, outputs and 3D lifting of ``ground_bag`` and writes, into one run folder:

- ``bags/<bag id>/``: per input bag, the output MCAP bag ``ground_bag`` writes;
- ``index.parquet``: one columnar index of every grounded frame's phrases and boxes
  (:mod:`.index`), with ``index/<bag id>.parquet`` per bag beside it;
- ``manifest.json``: the inputs (sizes, SHA-256), the options, the versions and what happened
  to every bag (:mod:`.manifest`);
- ``chunks/``: the results of finished chunks, so an interrupted run resumes where it stopped.

The work is split into chunks of admitted frames (:mod:`.plan`) grounded by inference workers
(:mod:`.work`): in this process, or one Ray actor per GPU or CPU worker (:mod:`.ray_pool`).
Each bag's output bag and index rows are then written by ``ground_bag``'s own loop, fed the
chunks' results (:class:`~kosmos_ros.corpus.work.ReplayEngine`), so every path gives the same
outputs frame for frame. :mod:`.search` queries the index and :mod:`.compare` compares two runs.
"""

from kosmos_ros.errors import KosmosError


class CorpusError(KosmosError):
    """A corpus run, search or comparison that cannot be done, with the reason."""
