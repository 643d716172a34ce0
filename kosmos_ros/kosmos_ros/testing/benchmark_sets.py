# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Tiny sets in the published formats of the article's benchmarks, for a dry run.

``python -m kosmos_ros.testing.benchmark_sets DIR`` writes, from the shipped photographs:

- ``DIR/flickr30k_entities/``: Flickr30k Entities' layout (``Sentences/<id>.txt``,
  ``Annotations/<id>.xml``, ``val.txt``, ``test.txt``, ``flickr30k-images/<id>.jpg``);
- ``DIR/refcoco/RefCOCOg/data/{val,test}-00000-of-00001.parquet``: the lmms-lab Parquet
  layout (images embedded; ``RefCOCO`` and ``RefCOCOplus`` likewise).

The boxes are hand-placed on the photographs; the sets check that the commands, readers and
outputs work (``make eval-article`` on them with ``--tiny-model``), not the model.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import Sequence

# image id: (photograph, sentences, objects (chain ids, [xmin, ymin, xmax, ymax])).
FLICKR = {
    '1001': ('chelsea', ['[/EN#1/animals A ginger cat] looks at [/EN#2/scene the camera] .',
                         '[/EN#1/animals The cat] has [/EN#3/bodyparts green eyes] .'],
             [(['1'], (120, 20, 420, 300)), (['3'], (230, 110, 330, 160))]),
    '1002': ('coffee', ['[/EN#4/other A cup of coffee] on [/EN#5/other a saucer] .'],
             [(['4'], (150, 40, 480, 300)), (['5'], (60, 120, 560, 380))]),
    '1003': ('astronaut', ['[/EN#6/people An astronaut] holds [/EN#7/other a helmet] .'],
             [(['6'], (100, 20, 420, 512)), (['7'], (340, 250, 512, 460))]),
}
# split: [(photograph, expressions, [x, y, width, height])].
REFCOCO = {
    'val': [('chelsea', ['the cat'], (120.0, 20.0, 300.0, 280.0))],
    'test': [('coffee', ['the cup', 'white cup with coffee'], (150.0, 40.0, 330.0, 260.0)),
             ('astronaut', ['the woman'], (100.0, 20.0, 320.0, 492.0))],
}
SPLITS = {'RefCOCO': ('val', 'testA', 'testB'), 'RefCOCOplus': ('val', 'testA', 'testB'),
          'RefCOCOg': ('val', 'test')}


def _jpeg(name: str) -> bytes:
    import cv2

    from kosmos_ros.testing.samples import load_photo

    rgb = load_photo(name)
    ok, data = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def write_flickr30k(folder: Path) -> Path:
    """Write the tiny Flickr30k Entities folder; return it."""
    from kosmos_ros.testing.samples import load_photo

    for name in ('Sentences', 'Annotations', 'flickr30k-images'):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for image_id, (photo, sentences, objects) in FLICKR.items():
        height, width = load_photo(photo).shape[:2]
        (folder / 'flickr30k-images' / f'{image_id}.jpg').write_bytes(_jpeg(photo))
        (folder / 'Sentences' / f'{image_id}.txt').write_text('\n'.join(sentences) + '\n')
        parts = [f'<annotation>\n\t<filename>{image_id}.jpg</filename>\n\t<size>\n'
                 f'\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n'
                 '\t\t<depth>3</depth>\n\t</size>\n']
        for names, box in objects:
            corners = ''.join(f'\t\t\t<{t}>{v}</{t}>\n'
                              for t, v in zip(('xmin', 'ymin', 'xmax', 'ymax'), box))
            parts.append('\t<object>\n' + ''.join(f'\t\t<name>{n}</name>\n' for n in names)
                         + f'\t\t<bndbox>\n{corners}\t\t</bndbox>\n\t</object>\n')
        parts.append('\t<object>\n\t\t<name>2</name>\n\t\t<scene>1</scene>\n'
                     '\t\t<nobndbox>0</nobndbox>\n\t</object>\n</annotation>\n')
        (folder / 'Annotations' / f'{image_id}.xml').write_text(''.join(parts))
    (folder / 'val.txt').write_text('1001\n')
    (folder / 'test.txt').write_text('1002\n1003\n')
    return folder


def write_refcoco(folder: Path) -> Path:
    """Write RefCOCO/, RefCOCOplus/ and RefCOCOg/ in the lmms-lab Parquet layout; return it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ('question_id', pa.string()),
        ('image', pa.struct([('bytes', pa.binary()), ('path', pa.string())])),
        ('question', pa.string()), ('answer', pa.list_(pa.string())),
        ('segmentation', pa.list_(pa.float32())), ('bbox', pa.list_(pa.float32())),
        ('iscrowd', pa.int8()), ('file_name', pa.string())])
    for dataset, splits in SPLITS.items():
        for split in splits:
            rows = REFCOCO['val' if split == 'val' else 'test']
            table = pa.table({
                'question_id': [f'{split}-{i}' for i in range(len(rows))],
                'image': [{'bytes': _jpeg(photo), 'path': None} for photo, _, _ in rows],
                'question': ['Describe the region.'] * len(rows),
                'answer': [list(texts) for _, texts, _ in rows],
                'segmentation': [[] for _ in rows], 'bbox': [list(b) for _, _, b in rows],
                'iscrowd': [0] * len(rows),
                'file_name': [f'{photo}.jpg' for photo, _, _ in rows]}, schema=schema)
            path = folder / dataset / 'data' / f'{split}-00000-of-00001.parquet'
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('folder', help='where to write flickr30k_entities/ and refcoco/')
    args = parser.parse_args(argv)
    root = Path(args.folder)
    print(write_flickr30k(root / 'flickr30k_entities'))
    print(write_refcoco(root / 'refcoco'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
