# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Debug images drawn and published on a thread of their own, so results never wait for them.

Drawing a 1080p frame and publishing it to a reliable subscriber (0.9 to 6 MB a message) took
the inference worker up to seconds, and every later result waited behind it (grounding
messages arrived 2.9 s after their frame, against 0.2 s without a debug subscriber). Here the
worker only hands over the frame and its result; this thread draws and publishes the newest
one per camera and drops those it could not get to.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from kosmos_ros.datatypes import GroundingResult
from kosmos_ros.drawing import annotate
from kosmos_ros.images import Frame

Publish = Callable[[Any], None]


class DebugImages:
    """Newest frame per camera wins; :meth:`offer` never blocks on drawing or DDS."""

    def __init__(self, to_message: Callable[[Any, Any], Any],
                 on_error: Callable[[str, Exception], None]):
        """``to_message(rgb, header)`` builds the image message; errors go to ``on_error``."""
        self._to_message = to_message
        self._on_error = on_error
        self._pending: dict[str, tuple[Publish, Frame, GroundingResult, Any]] = {}
        self._wake = threading.Condition()
        self._stopped = False
        self.dropped = 0  # frames replaced by a newer one before they were drawn
        self._thread = threading.Thread(target=self._run, name='kosmos_debug_images',
                                        daemon=True)
        self._thread.start()

    def offer(self, camera: str, publish: Publish, frame: Frame, result: GroundingResult,
              header: Any) -> None:
        with self._wake:
            if self._stopped:
                return
            self.dropped += camera in self._pending
            self._pending[camera] = (publish, frame, result, header)
            self._wake.notify()

    def close(self, timeout: float = 5.0) -> None:
        """Stop; a debug image being published is finished first (bounded by ``timeout``)."""
        with self._wake:
            self._stopped = True
            self._pending.clear()
            self._wake.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._stopped:
                    self._wake.wait()
                if self._stopped:
                    return
                camera = next(iter(self._pending))
                publish, frame, result, header = self._pending.pop(camera)
            try:
                publish(self._to_message(annotate(frame.to_rgb(), result), header))
            except Exception as exc:  # a debug image must never end this thread
                self._on_error(camera, exc)
