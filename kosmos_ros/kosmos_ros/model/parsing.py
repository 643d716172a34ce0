# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Generated text to cleaned text, phrases and boxes; location tokens to their positions.

:func:`parse_grounded_text` gives the same cleaned text, phrase spans and normalized boxes as
the reference ``Kosmos2Processor.post_process_generation`` (tested against it), and also keeps
the grid cells of each box so that the engine can find the tokens that named them and score
the box by the model's probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
import re
from typing import Sequence

from kosmos_ros.model.boxes import GRID_SIZE, patch_indices_to_normalized

END_OF_IMAGE = '</image>'
_ANY_TAG = re.compile(r'<.*?>')
_BOX = r'<patch_index_\d+><patch_index_\d+>'
_ENTITY = re.compile(
    r'(?:(<phrase>([^<]+)</phrase>))?<object>((?:' + _BOX
    + r'</delimiter_of_multi_objects/>)*' + _BOX + r')</object>')
_CELL = re.compile(r'<patch_index_(\d+)>')


@dataclass(frozen=True)
class ParsedPhrase:
    """A phrase of the cleaned text with the grid cells of its boxes."""

    text: str
    start: int
    end: int
    cells: tuple[tuple[int, int], ...]

    def normalized_boxes(self, grid: int = GRID_SIZE) -> list[tuple[float, float, float, float]]:
        return [patch_indices_to_normalized(a, b, grid) for a, b in self.cells]


def caption_part(decoded: str) -> str:
    """Return the part of a decoded sequence after the image (after its last ``</image>``)."""
    return decoded.split(END_OF_IMAGE)[-1]


def strip_tags(text: str) -> str:
    """Remove every tag (``<phrase>``, ``<object>``, patch indices, ...) from ``text``."""
    return _ANY_TAG.sub('', text)


def _clean_length(text: str) -> int:
    return len(_ANY_TAG.sub('', text))


def parse_grounded_text(text: str) -> tuple[str, list[ParsedPhrase]]:
    """Split grounded text into cleaned text and phrases.

    ``text`` is the model's text after ``</image>``, e.g.
    ``<grounding> An image of<phrase> a dog</phrase><object><patch_index_0044>
    <patch_index_0863></object>.``. Tags are removed from the text; phrase spans index the
    cleaned text with surrounding spaces trimmed. An ``<object>`` without a phrase yields one
    phrase per box, named by its tokens (``<patch_index_44><patch_index_863>``), with an empty
    span where the object stood.
    """
    cleaned = _ANY_TAG.sub('', text)
    lead = len(cleaned) - len(cleaned.lstrip())
    phrases: list[ParsedPhrase] = []
    for match in _ENTITY.finditer(text):
        cells = []
        for pair in match.group(3).split('</delimiter_of_multi_objects/>'):
            found = _CELL.findall(pair)
            cells.append((int(found[0]), int(found[1])))
        if match.group(1):
            name = match.group(2)
            start = _clean_length(text[:match.start(2)])
            end = _clean_length(text[:match.end(2)])
            stripped = name.strip()
            start += len(name) - len(name.lstrip()) - lead
            end -= len(name) - len(name.rstrip()) + lead
            phrases.append(ParsedPhrase(stripped, start, end, tuple(cells)))
        else:
            at = _clean_length(text[:match.start()]) - lead
            for a, b in cells:
                phrases.append(ParsedPhrase(f'<patch_index_{a}><patch_index_{b}>', at, at,
                                            ((a, b),)))
    return cleaned.strip(), phrases


@dataclass(frozen=True)
class LocationTokenIds:
    """Token ids of the tags that structure a location (from the model's tokenizer)."""

    object_start: int
    object_end: int
    delimiter: int
    first_patch: int
    num_patches: int

    def cell(self, token_id: int) -> int | None:
        offset = token_id - self.first_patch
        return offset if 0 <= offset < self.num_patches else None


def locate_box_tokens(token_ids: Sequence[int],
                      ids: LocationTokenIds) -> list[tuple[int, int, int, int]]:
    """Find every box named by location tokens inside ``<object> ... </object>``.

    Returns (position of the top-left token, position of the bottom-right token, top-left
    cell, bottom-right cell) per box, in order, for well-formed groups only.
    """
    boxes: list[tuple[int, int, int, int]] = []
    i, n = 0, len(token_ids)
    while i < n:
        if token_ids[i] != ids.object_start:
            i += 1
            continue
        j, group, complete = i + 1, [], False
        while j + 1 < n:
            a, b = ids.cell(token_ids[j]), ids.cell(token_ids[j + 1])
            if a is None or b is None:
                complete = False
                break
            group.append((j, j + 1, a, b))
            j += 2
            complete = True
            if j < n and token_ids[j] == ids.delimiter:
                j += 1
                complete = False
                continue
            break
        if complete and j < n and token_ids[j] == ids.object_end:
            boxes.extend(group)
            i = j + 1
        else:
            i += 1
    return boxes
