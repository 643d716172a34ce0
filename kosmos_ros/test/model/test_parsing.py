# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Post-processing and the location grid against the reference implementation."""

import math
import random

import pytest
from transformers.models.kosmos2 import processing_kosmos2 as ref

from kosmos_ros.datatypes import PixelBox
from kosmos_ros.model.boxes import (normalized_to_patch_indices, normalized_to_pixels,
                                    patch_indices_to_normalized, patch_token, pixels_to_normalized)
from kosmos_ros.model.parsing import (caption_part, locate_box_tokens, LocationTokenIds,
                                      parse_grounded_text)

pytestmark = pytest.mark.fast  # in make test-fast: no DDS, no model

SNOWMAN = ('<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044>'
           '<patch_index_0863></object> warming up by<phrase> a fire</phrase><object>'
           '<patch_index_0006><patch_index_0879></object>')


def entities(text):
    clean, phrases = parse_grounded_text(text)
    return clean, [(p.text, (p.start, p.end), p.normalized_boxes()) for p in phrases]


def test_model_card_golden_case():
    clean, ents = entities(SNOWMAN)
    assert clean == 'An image of a snowman warming up by a fire'
    assert ents == [('a snowman', (12, 21), [(0.390625, 0.046875, 0.984375, 0.828125)]),
                    ('a fire', (36, 42), [(0.203125, 0.015625, 0.484375, 0.859375)])]
    assert clean[12:21] == 'a snowman' and clean[36:42] == 'a fire'


def test_caption_part_takes_text_after_the_image():
    assert caption_part('xx <image> junk</image><grounding> An image of') == \
        '<grounding> An image of'
    assert caption_part('no image here') == 'no image here'


def _random_grounded_text(rng):
    words = [' a', ' dog', ' the red cup', 'x', ' ', '  ', '.', ',', ' on', 'é', '<', '>',
             ' 3 < 4', 'a>b']
    cell = lambda: f'<patch_index_{rng.randrange(1024):04d}>'  # noqa: E731
    pieces = []
    for _ in range(rng.randrange(1, 12)):
        kind = rng.random()
        if kind < 0.35:
            pieces.append(rng.choice(words))
        elif kind < 0.6:
            pieces.append(f'<phrase>{rng.choice(words)}{rng.choice(words)}</phrase>')
        elif kind < 0.85:
            boxes = [cell() + cell() for _ in range(rng.randrange(1, 4))]
            pieces.append('<object>' + '</delimiter_of_multi_objects/>'.join(boxes) + '</object>')
        else:  # malformed pieces
            pieces.append(rng.choice(['<object>', '</object>', cell(), '<phrase>', '</phrase>',
                                      '<grounding>', '</delimiter_of_multi_objects/>']))
    return ''.join(pieces)


def test_parser_equals_reference_on_random_texts():
    rng = random.Random(1234)
    for _ in range(3000):
        text = _random_grounded_text(rng)
        assert entities(text) == ref.clean_text_and_extract_entities_with_bboxes(text), text


def test_grid_matches_reference_both_ways():
    rng = random.Random(7)
    pairs = [(rng.randrange(1024), rng.randrange(1024)) for _ in range(20000)]
    pairs += [(i, i) for i in range(1024)] + [(32 * r, 32 * r + 31) for r in range(32)]
    for a, b in pairs:
        assert patch_indices_to_normalized(a, b) == ref.patch_index_to_coordinate(a, b, 32)
    for _ in range(20000):
        x1, x2 = sorted(rng.random() for _ in range(2))
        y1, y2 = sorted(rng.random() for _ in range(2))
        if x2 > x1 and y2 > y1:
            box = (x1, y1, x2, y2)
            assert normalized_to_patch_indices(box) == ref.coordinate_to_patch_index(box, 32)
    with pytest.raises(ValueError, match='x2 > x1'):
        normalized_to_patch_indices((0.5, 0.1, 0.5, 0.2))
    with pytest.raises(ValueError, match='outside'):
        patch_token(1024)


def test_pixel_mapping_on_a_non_square_image():
    normalized = patch_indices_to_normalized(44, 863)
    assert normalized == (0.390625, 0.046875, 0.984375, 0.828125)
    box = normalized_to_pixels(normalized, 640, 480)
    assert (box.x1, box.y1, box.x2, box.y2) == (250.0, 22.5, 630.0, 397.5)
    assert pixels_to_normalized(box, 640, 480) == normalized
    clamped = normalized_to_pixels((-0.1, 0.2, 1.5, 1.0), 100, 50)
    assert (clamped.x1, clamped.x2, clamped.y2) == (0.0, 100.0, 50.0)
    assert PixelBox.from_center(10, 20, 4, 6) == PixelBox(8, 17, 12, 23)
    assert math.isclose(box.center[0], 440.0)


IDS = LocationTokenIds(object_start=9, object_end=10, delimiter=11, first_patch=100,
                       num_patches=1024)


def test_location_tokens_are_found_only_in_well_formed_groups():
    seq = [5, 9, 144, 963, 10, 7, 9, 101, 102, 11, 103, 104, 10, 9, 150, 10, 9, 120, 121]
    assert locate_box_tokens(seq, IDS) == [(2, 3, 44, 863), (7, 8, 1, 2), (10, 11, 3, 4)]
    assert locate_box_tokens([], IDS) == []
    assert locate_box_tokens([9, 10], IDS) == []
    assert locate_box_tokens([9, 100, 101, 11, 10], IDS) == []
