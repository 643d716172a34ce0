# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Draw grounded phrases and their boxes on a frame (for debug images and reports)."""

from __future__ import annotations

import numpy as np

from kosmos_ros.datatypes import GroundingResult, PixelBox
from kosmos_ros.threads import opencv

PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


def label_scale(rgb: np.ndarray) -> float:
    """Return the text scale of labels drawn on a frame of this size."""
    height, width = rgb.shape[:2]
    return max(0.4, min(width, height) / 800.0)


def draw_box(out: np.ndarray, box: PixelBox, label: str, colour: tuple[int, int, int],
             scale: float | None = None) -> None:
    """Draw a pixel box and its label on a contiguous uint8 frame, in place.

    The label sits on a tag of the box's colour at its top-left corner (inside the frame).
    """
    cv2 = opencv()

    scale = label_scale(out) if scale is None else scale
    thickness = max(1, int(round(2 * scale)))
    x1, y1 = int(round(box.x1)), int(round(box.y1))
    x2, y2 = int(round(box.x2)) - 1, int(round(box.y2)) - 1
    cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    ty = max(y1, th + base + 2)
    cv2.rectangle(out, (x1, ty - th - base - 2), (x1 + tw + 4, ty), colour, -1)
    cv2.putText(out, label, (x1 + 2, ty - base - 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 0, 0), thickness, cv2.LINE_AA)


def annotate(rgb: np.ndarray, result: GroundingResult, caption: bool = True) -> np.ndarray:
    """Return a copy of the RGB frame with each box, its phrase and score drawn on it."""
    cv2 = opencv()

    out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    height, width = out.shape[:2]
    scale = label_scale(out)
    for index, phrase in enumerate(result.phrases):
        colour = PALETTE[index % len(PALETTE)]
        for box in phrase.boxes:
            draw_box(out, box.pixels, f'{phrase.text} {box.score:.2f}', colour, scale)
    if caption and result.text:
        text = result.text if len(result.text) <= 120 else result.text[:117] + '...'
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8, 1)
        cv2.rectangle(out, (0, height - th - base - 6), (min(width, tw + 8), height),
                      (0, 0, 0), -1)
        cv2.putText(out, text, (4, height - base - 3), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out
