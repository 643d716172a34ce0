# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""A small COCO-format labelled set of the shipped photographs, to try and time ``kosmos_eval``.

``python -m kosmos_ros.testing.labelled_set FOLDER [--images 6] [--size 320x240]`` writes
``FOLDER/NNNN.jpg`` (the photographs of :mod:`.samples`, resized) and ``FOLDER/labels.json``
with hand-placed boxes: a cup on the coffee photograph, a cat on the cat photograph, a person
on the astronaut, a rocket on the rocket and a motorcycle on both motorcycle photographs, each
category asked on every image. The boxes are rough (placed once by eye, in fractions of the
image), enough for a demonstration; they measure nothing about a model.

``--sample-bag`` writes ``FOLDER/bag_labels.json`` instead: the same boxes on frames of the
sample bag (``make_sample_bag``'s default stream), named by topic and header stamp, one frame
per photograph, on the raw and the JPEG topic in turn (:func:`make_bag_labels`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kosmos_ros.testing.samples import load_photo, PHOTO_NAMES

# Photograph -> (category, box as fractions of the image: x1, y1, x2, y2).
BOXES = {
    'coffee': ('a cup', (0.18, 0.08, 0.85, 0.78)),
    'chelsea': ('a cat', (0.05, 0.05, 0.95, 0.98)),
    'astronaut': ('a person', (0.15, 0.0, 0.85, 1.0)),
    'rocket': ('a rocket', (0.45, 0.05, 0.62, 0.92)),
    'motorcycle_left': ('a motorcycle', (0.05, 0.2, 0.95, 0.95)),
    'motorcycle_right': ('a motorcycle', (0.05, 0.2, 0.95, 0.95)),
}


# Category name -> COCO category id.
CATEGORY_IDS = {name: n + 1 for n, name in enumerate(sorted({c for c, _ in BOXES.values()}))}


def _annotation(image_id: int, photo: str, width: int, height: int) -> dict:
    """Return the COCO annotation of ``photo``'s box on an image of width x height."""
    category, (x1, y1, x2, y2) = BOXES[photo]
    return {'id': image_id, 'image_id': image_id, 'category_id': CATEGORY_IDS[category],
            'bbox': [round(x1 * width, 1), round(y1 * height, 1),
                     round((x2 - x1) * width, 1), round((y2 - y1) * height, 1)],
            'iscrowd': 0}


def _write_labels(path: Path, entries: list[dict], annotations: list[dict]) -> Path:
    """Write a COCO label file of these entries, annotations and every category; return it."""
    path.write_text(json.dumps({
        'images': entries, 'annotations': annotations,
        'categories': [{'id': i, 'name': name} for name, i in CATEGORY_IDS.items()]},
        indent=1) + '\n')
    return path


def make_labelled_set(folder: Path, images: int = 6, size: tuple[int, int] = (320, 240)) -> Path:
    """Write ``images`` JPEG files and their COCO label file into ``folder``; return the latter."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    entries, annotations = [], []
    for n in range(images):
        photo = PHOTO_NAMES[n % len(PHOTO_NAMES)]
        file_name = f'{n:04d}.jpg'
        cv2.imwrite(str(folder / file_name),
                    cv2.cvtColor(cv2.resize(load_photo(photo), size), cv2.COLOR_RGB2BGR))
        entries.append({'id': n + 1, 'file_name': file_name, 'width': width, 'height': height})
        annotations.append(_annotation(n + 1, photo, width, height))
    return _write_labels(folder / 'labels.json', entries, annotations)


def make_bag_labels(folder: Path) -> Path:
    """Write labels for frames of the default sample bag into ``folder``; return the file."""
    from kosmos_ros.bag.sample import COMPRESSED_TOPIC, IMAGE_TOPIC, SampleSpec

    spec = SampleSpec()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    period_ns = int(round(1e9 / spec.rate_hz))
    entries, annotations = [], []
    for slot, photo in enumerate(spec.photos):
        middle = (slot * 2 + 1) * spec.frames // (2 * len(spec.photos))  # the photo's middle
        entries.append({'id': slot + 1, 'topic': (IMAGE_TOPIC, COMPRESSED_TOPIC)[slot % 2],
                        'stamp_ns': spec.start_ns + middle * period_ns,
                        'width': spec.width, 'height': spec.height})
        annotations.append(_annotation(slot + 1, photo, spec.width, spec.height))
    return _write_labels(folder / 'bag_labels.json', entries, annotations)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m kosmos_ros.testing.labelled_set',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('folder', help='where to write the images and labels.json')
    parser.add_argument('--images', type=int, default=6, help='how many images (default: 6)')
    parser.add_argument('--size', default='320x240', help='WIDTHxHEIGHT (default: 320x240)')
    parser.add_argument('--sample-bag', action='store_true',
                        help='label frames of the sample bag (bag_labels.json) instead')
    args = parser.parse_args(argv)
    if args.sample_bag:
        print(f'wrote {make_bag_labels(Path(args.folder))}')
        return 0
    try:
        width, height = (int(v) for v in args.size.lower().split('x'))
    except ValueError:
        parser.error(f'--size must be WIDTHxHEIGHT; got {args.size!r}')
    if args.images < 1 or width < 1 or height < 1:
        parser.error('--images and the size must be 1 or more')
    print(f'wrote {make_labelled_set(Path(args.folder), args.images, (width, height))}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
