# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The HTML report of ``ground_bag``: its summary and every grounded frame, annotated."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kosmos_ros.bag import BagError
from kosmos_ros.drawing import annotate
from kosmos_ros.messages import phrase_position
from kosmos_ros.threads import opencv


def url_of(name: str) -> str:
    """Return a file name as a relative URL: every byte but letters, digits and ``_.-~`` quoted.

    So ``#``, ``?``, ``%`` and ``:`` stay part of the name (not a fragment, a query, an escape
    or a scheme), and quotes cannot end the attribute it is written into.
    """
    return quote(os.fsencode(name), safe='')


def frames_folder(path: Path) -> Path:
    """Return the folder of the report's frame files: ``<report stem>_frames/`` beside it."""
    path = Path(path)
    return path.with_name(path.stem + '_frames')


class HtmlReport:
    """A page with the summary and every grounded frame, annotated with its phrases and boxes.

    Frames are JPEG files in ``<report stem>_frames/`` beside the page, or embedded in it.
    Frames are saved as they come, and the page is (re)written at the end of a run, also an
    interrupted one.
    """

    def __init__(self, path: Path, embed: bool, summary: Any):
        self.path = Path(path)
        self.embed = embed
        self.summary = summary
        self.folder = frames_folder(self.path)
        self.entries: list[tuple[Any, str]] = []

    def add(self, outcome: Any, frame: Any) -> None:
        cv2 = opencv()

        rgb = annotate(frame.to_rgb(), outcome.result)
        ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise BagError('OpenCV could not encode an annotated frame as JPEG')
        if self.embed:
            src = 'data:image/jpeg;base64,' + base64.b64encode(jpeg.tobytes()).decode()
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f'{len(self.entries):05d}.jpg'
            (self.folder / name).write_bytes(jpeg.tobytes())
            src = f'{url_of(self.folder.name)}/{url_of(name)}'
        self.entries.append((outcome, src))

    def write(self) -> None:
        esc = html.escape
        label = self.summary.model_label
        parts = ['<!DOCTYPE html>', '<html><head><meta charset="utf-8">',
                 f'<title>ground_bag: {esc(str(self.summary.bag))}</title>',
                 '<style>body{font-family:sans-serif;margin:1em}img{max-width:100%}'
                 '.frame{display:inline-block;vertical-align:top;width:480px;margin:.5em}'
                 '.label{background:#c00;color:#fff;padding:.5em;font-weight:bold}'
                 '</style></head><body>', f'<h1>ground_bag: {esc(str(self.summary.bag))}</h1>']
        if label:
            parts.append(f'<p class="label">{esc(label)}</p>')
        parts.append(f'<pre>{esc(self.summary.describe())}</pre>')
        for outcome, src in self.entries:
            result = outcome.result
            items = []
            for index, phrase in enumerate(result.phrases):
                boxes = ', '.join(f'[{b.pixels.x1:.0f}, {b.pixels.y1:.0f}, {b.pixels.x2:.0f}, '
                                  f'{b.pixels.y2:.0f}] {b.score:.2f}' for b in phrase.boxes)
                where = ''
                if outcome.lifted is not None:
                    position, note = phrase_position(phrase, outcome.lifted[index])
                    where = ('; at ({:.3f}, {:.3f}, {:.3f}) m'.format(*position) if position
                             else f'; no 3D: {note}')
                items.append(f'<li>{esc(phrase.text)}: {esc(boxes) or "no box"}'
                             f'{esc(where)}</li>')
            parts.append(f'<div class="frame"><img src="{esc(src)}" alt="frame"><br>'
                         f'<b>{esc(outcome.topic)}</b> {outcome.stamp:.3f} '
                         f'({esc(outcome.frame_id)})<br>{esc(result.text)}'
                         f'<ul>{"".join(items)}</ul></div>')
        parts.append('</body></html>')
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text('\n'.join(parts), encoding='utf-8')
