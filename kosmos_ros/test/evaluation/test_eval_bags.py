# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""kosmos_eval on frames of bags: labels matched by topic and header stamp.

A bag written here holds photographs on a raw and a JPEG topic, with frames that must be
skipped (another size, garbage bytes, two frames with one stamp) and frames no label names.
The tiny model is steered per phrase (test_eval's :class:`PhraseSteer`), so the figures are
known; they must equal those of the same frames saved as image files.
"""

import json

import cv2
import numpy as np
import pytest
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores

from kosmos_ros.bag.typestore import COMPRESSED_IMAGE, IMAGE, project_typestore
from kosmos_ros.evaluation import bag_frames as B
from kosmos_ros.evaluation import EvaluationError
from kosmos_ros.evaluation import labels as L
from kosmos_ros.evaluation.bag_frames import BagFrames, check_bags, WorstFrames
from kosmos_ros.evaluation.calibration import Target
from kosmos_ros.evaluation.cli import main
from kosmos_ros.evaluation.labels import LabelsError, read_labels
from kosmos_ros.evaluation.record import evaluate
from kosmos_ros.evaluation.run import ground_labels, SKIP_LABELS_OF_SKIPPED

from test_eval import phrase_steered, SIZE, xywh  # noqa: I100

RAW, JPEG, TEXT = '/cam/image_raw', '/cam/image_raw/compressed', '/cam/notes'
T0 = 1_700_000_000_000_000_000
# (topic, stamp, photo or what the frame is); frames 0, 1 and 2 are the labelled good ones.
FRAMES = [(RAW, T0, 'coffee'), (JPEG, T0 + 1, 'chelsea'), (RAW, T0 + 2 * 10**8, 'astronaut'),
          (RAW, T0 + 3 * 10**8, 'rocket'),  # never labelled
          (RAW, T0 + 4 * 10**8, 'wide'),  # 200x100: another size than its label entry
          (JPEG, T0 + 5 * 10**8, 'garbage'),  # not a JPEG
          (RAW, T0 + 6 * 10**8, 'coffee'), (RAW, T0 + 6 * 10**8, 'chelsea'),  # one stamp twice
          (RAW, T0 + 9 * 10**8, 'coffee')]  # labelled last: reading stops there
MODEL = ['--max-new-tokens', '4', '--no-progress', '--device', 'cpu', '--local-files-only']


def _header(types, stamp, frame_id='cam'):
    return types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=stamp // 10**9, nanosec=stamp % 10**9),
        frame_id=frame_id)


def _pixels(photos, photo):
    size = (200, 100) if photo == 'wide' else SIZE
    return cv2.resize(photos['coffee' if photo == 'wide' else photo], size)


def write_bag(path, photos, frames=FRAMES, storage=StoragePlugin.MCAP):
    """Write ``frames`` (raw rgb8 or JPEG) and a text topic to a rosbag2 bag."""
    store = project_typestore()
    types = store.types
    with Writer(path, version=9, storage_plugin=storage) as writer:
        conns = {RAW: writer.add_connection(RAW, IMAGE, typestore=store),
                 JPEG: writer.add_connection(JPEG, COMPRESSED_IMAGE, typestore=store),
                 TEXT: writer.add_connection(TEXT, 'std_msgs/msg/String', typestore=store)}
        writer.write(conns[TEXT], T0, store.serialize_cdr(
            types['std_msgs/msg/String'](data='hello'), 'std_msgs/msg/String'))
        for n, (topic, stamp, photo) in enumerate(frames):
            if topic == JPEG:
                data = np.frombuffer(b'\xff\xd8\xff' + bytes(range(200)), np.uint8) \
                    if photo == 'garbage' else cv2.imencode(
                        '.jpg', cv2.cvtColor(_pixels(photos, photo), cv2.COLOR_RGB2BGR))[1]
                msg = types[COMPRESSED_IMAGE](header=_header(types, stamp), format='jpeg',
                                              data=data.reshape(-1))
            else:
                rgb = _pixels(photos, photo)
                msg = types[IMAGE](header=_header(types, stamp), height=rgb.shape[0],
                                   width=rgb.shape[1], encoding='rgb8', is_bigendian=0,
                                   step=rgb.shape[1] * 3, data=rgb.reshape(-1))
            msgtype = conns[topic].msgtype
            writer.write(conns[topic], T0 + n * 10**6, store.serialize_cdr(msg, msgtype))
    return path


def labels_for(path, entries, boxes, names=('cat', 'cup', 'dog')):
    """Write a label file: image entries (id from 1), boxes {id: [(name, box)]}, categories."""
    ids = {name: n for n, name in enumerate(names, 1)}
    annotations = [{'id': n, 'image_id': image_id, 'category_id': ids[category],
                    'bbox': xywh(box), 'iscrowd': 0}
                   for n, (image_id, category, box) in enumerate(
                       ((i, c, b) for i, pairs in boxes.items() for c, b in pairs), 1)]
    path.write_text(json.dumps({
        'images': [dict(entry, id=n) for n, entry in enumerate(entries, 1)],
        'annotations': annotations,
        'categories': [{'id': n, 'name': name} for name, n in ids.items()]}))
    return path


def frame_entry(topic, stamp, **more):
    return {'topic': topic, 'stamp_ns': stamp, 'width': SIZE[0], 'height': SIZE[1], **more}


@pytest.fixture(scope='module')
def steered(engine):
    return phrase_steered(engine)


@pytest.fixture(scope='module')
def bag(tmp_path_factory, photos):
    return write_bag(tmp_path_factory.mktemp('bags') / 'cam', photos)


@pytest.fixture(scope='module')
def cat_box(steered, photos):
    from kosmos_ros.datatypes import Query, Task
    from kosmos_ros.images import frame_from_array
    result = steered.ground(frame_from_array(_pixels(photos, 'coffee')), Query(Task.FIND, 'cat'))
    (box,) = [(b.pixels.x1, b.pixels.y1, b.pixels.x2, b.pixels.y2)
              for _, _, p, b in result.detections() if p.text == 'cat']
    return box


def _same_figures(a, b):
    """Compare two records but for what names files: the labels, the worst lists' images."""
    def strip(record):
        out = {k: v for k, v in record.items() if k not in ('labels', 'worst')}
        out['worst'] = {kind: [{k: v for k, v in e.items() if k != 'image'} for e in entries]
                        for kind, entries in record['worst'].items()}
        return out
    assert strip(a) == strip(b)


def test_bag_frames_score_as_the_same_frames_saved_as_files(steered, bag, cat_box, tmp_path):
    """Raw and JPEG frames, found by topic and stamp, give the figures their files give."""
    from kosmos_ros.bag.reading import open_reader
    from kosmos_ros.images import frame_from_message

    entries = [frame_entry(t, s) for t, s, _ in FRAMES[:3]]
    boxes = {1: [('cat', cat_box), ('cup', (0.0, 0.0, 40.0, 40.0))],
             2: [('cat', cat_box)], 3: [('cat', (0.0, 60.0, 45.0, 110.0)), ('dog', cat_box)]}
    from_bag = ground_labels(read_labels(labels_for(tmp_path / 'bag.json', entries, boxes)),
                             None, steered, sources=[BagFrames([bag], read_labels(
                                 tmp_path / 'bag.json').images, tmp_path / 'out')])
    folder = tmp_path / 'images'
    folder.mkdir()
    reader = open_reader(bag)
    try:  # the same pixels, as files
        for conn, _, raw in reader.messages():
            if conn.topic in (RAW, JPEG):
                msg = reader.deserialize(raw, conn.msgtype)
                stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                for n, (topic, s, _) in enumerate(FRAMES[:3]):
                    if (topic, s) == (conn.topic, stamp):
                        cv2.imwrite(str(folder / f'{n}.png'), cv2.cvtColor(
                            frame_from_message(msg).to_rgb(), cv2.COLOR_RGB2BGR))
    finally:
        reader.close()
    files = [{'file_name': f'{n}.png', 'width': SIZE[0], 'height': SIZE[1]} for n in range(3)]
    from_files = ground_labels(read_labels(labels_for(tmp_path / 'files.json', files, boxes)),
                               folder, steered)
    assert [i.image_id for i in from_bag.images] == [1, 2, 3] and not from_bag.skipped
    assert from_bag.images[0].path == tmp_path / 'out' / 'frames' / 'image_1.jpg'
    a = evaluate(from_bag, 'tiny', 0.0, Target('precision', 1.0)).record
    b = evaluate(from_files, 'tiny', 0.0, Target('precision', 1.0)).record
    _same_figures(a, b)
    assert a['phrases']['cat']['labels'] == 3 and a['phrases']['cat']['recall'] == 2 / 3
    assert a['phrases']['cat']['precision'] == 2 / 3  # a cat on each; the third is a miss


def test_every_skip_is_counted_and_the_report_frames_written(bag, tiny_model_dir, tmp_path,
                                                             capsys):
    stamped = {'topic': RAW, 'stamp': {'sec': T0 // 10**9, 'nanosec': T0 % 10**9},
               'file_name': 'first.png', 'width': SIZE[0], 'height': SIZE[1]}
    entries = [stamped, frame_entry(JPEG, FRAMES[1][1]),
               frame_entry(RAW, FRAMES[4][1]),  # another size
               frame_entry(JPEG, FRAMES[5][1]),  # garbage
               frame_entry(RAW, FRAMES[6][1]),  # found twice
               frame_entry(RAW, T0 + 7),  # no frame with that stamp
               frame_entry('/other/image_raw', T0),  # a topic in no bag
               frame_entry(TEXT, T0),  # not an image topic
               frame_entry(RAW, FRAMES[8][1])]
    box = (10.0, 10.0, 60.0, 60.0)
    labels = labels_for(tmp_path / 'labels.json', entries,
                        {1: [('cat', box)], 3: [('cup', box)], 5: [('cat', box), ('dog', box)]})
    out = tmp_path / 'out'
    (out / 'frames').mkdir(parents=True)
    (out / 'frames' / 'image_99.jpg').write_bytes(b'from an earlier run')
    assert main(['coco', str(labels), '--bag', str(bag), '-o', str(out), '--model',
                 str(tiny_model_dir)] + MODEL) == 0
    captured = capsys.readouterr()
    record = json.loads((out / 'eval.json').read_text())
    assert record['images'] == 3, captured
    assert record['skipped'] == {B.SKIP_SIZE: 1, B.SKIP_UNDECODED: 1, B.SKIP_AMBIGUOUS: 1,
                                 B.SKIP_NO_STAMP: 1, B.SKIP_TOPIC_ABSENT: 1, B.SKIP_NOT_IMAGE: 1,
                                 SKIP_LABELS_OF_SKIPPED: 3}
    assert 'image 4 (/cam/image_raw/compressed at' in captured.err
    assert 'neither JPEG nor PNG' in captured.err or 'JPEG' in captured.err
    shown = {e['image'] for kind in record['worst'].values() for e in kind}
    assert shown and all(p.startswith(str(out / 'frames')) for p in shown)
    assert sorted(p.name for p in (out / 'frames').iterdir()) == sorted(
        p.rsplit('/', 1)[1] for p in shown)
    for path in shown:
        assert cv2.imread(path).shape == (SIZE[1], SIZE[0], 3)
    assert main(['report', str(out / 'eval.json'), '-o', str(out / 'report.html')]) == 0
    assert 'cannot be read' not in (out / 'report.html').read_text()


def test_sqlite3_and_ros1_bags_and_several_bags(photos, steered, tmp_path):
    first = write_bag(tmp_path / 'a', photos, FRAMES[:1], StoragePlugin.SQLITE3)
    store = get_typestore(Stores.ROS1_NOETIC)
    types = store.types
    rgb = _pixels(photos, 'astronaut')
    with Ros1Writer(tmp_path / 'b.bag') as writer:
        conn = writer.add_connection(RAW, IMAGE, typestore=store)
        header = types['std_msgs/msg/Header'](seq=0, stamp=types['builtin_interfaces/msg/Time'](
            sec=50, nanosec=7), frame_id='cam')
        writer.write(conn, 1, store.serialize_ros1(types[IMAGE](
            header=header, height=SIZE[1], width=SIZE[0], encoding='rgb8', is_bigendian=0,
            step=SIZE[0] * 3, data=rgb.reshape(-1)), IMAGE))
    labels = read_labels(labels_for(tmp_path / 'l.json', [
        frame_entry(RAW, T0), frame_entry(RAW, 50 * 10**9 + 7)], {}))
    grounded = ground_labels(labels, None, steered, sources=[
        BagFrames([first, tmp_path / 'b.bag'], labels.images, tmp_path / 'out')])
    assert [i.image_id for i in grounded.images] == [1, 2] and not grounded.skipped


def test_worst_frames_keeps_only_what_may_be_shown():
    from kosmos_ros.evaluation.labels import Category, LabelBox
    from kosmos_ros.evaluation.run import Detection, EvaluatedImage
    from kosmos_ros.images import frame_from_array

    frame = frame_from_array(np.zeros((20, 20, 3), np.uint8))
    keeper = WorstFrames((Category(1, 'cat', 'cat'),), 0.0, 2)
    for n in range(1, 6):  # image n misses a box of area n * n
        keeper.keep(EvaluatedImage(n, None, 20, 20, (LabelBox(1, (0, 0, n, n)),)), frame, [])
    keeper.keep(EvaluatedImage(9, None, 20, 20, ()), frame,
                [Detection(9, 1, (0, 0, 5, 5), 0.5)])
    assert set(keeper.jpegs) == {4, 5, 9}
    keeper.drop(5)
    assert set(keeper.jpegs) == {4, 9}


@pytest.mark.parametrize('entry, match', [
    ({'topic': RAW, 'stamp_ns': -1}, 'negative'),
    ({'topic': RAW, 'stamp_ns': 1.5e18}, 'whole number'),
    ({'topic': RAW, 'stamp_ns': float('nan')}, 'whole number'),
    ({'topic': RAW, 'stamp_ns': '17'}, 'whole number'),
    ({'topic': RAW, 'stamp_ns': True}, 'whole number'),
    ({'topic': RAW, 'stamp': {'sec': 1, 'nanosec': 10**9}}, 'nanosec 0 to 999999999'),
    ({'topic': RAW, 'stamp': {'sec': 1.0, 'nanosec': 0}}, 'whole'),
    ({'topic': RAW, 'stamp_ns': 1, 'stamp': {'sec': 0, 'nanosec': 1}}, 'both'),
    ({'topic': RAW}, 'no "stamp_ns" or "stamp"'),
    ({'stamp_ns': 5, 'file_name': 'a.png'}, 'no "topic"'),
])
def test_bad_frame_entries_are_refused(entry, match, tmp_path):
    path = tmp_path / 'labels.json'
    path.write_text(json.dumps({'images': [dict(entry, id=1)], 'annotations': [],
                                'categories': [{'id': 1, 'name': 'cat'}]}))
    with pytest.raises(LabelsError, match=match):
        read_labels(path)


def test_two_entries_naming_one_frame_are_refused(tmp_path):
    path = labels_for(tmp_path / 'labels.json', [frame_entry(RAW, 5), frame_entry(RAW, 5)], {})
    with pytest.raises(LabelsError, match='images 1 and 2 both name the frame'):
        read_labels(path)


def test_a_frame_entry_file_name_is_only_its_name(tmp_path):
    labels = read_labels(labels_for(tmp_path / 'l.json', [
        frame_entry(RAW, 5, file_name='x.png'), frame_entry(RAW, 6), {'file_name': 'a.png'}],
        {}))
    first, second, third = labels.images
    assert (first.is_frame, first.file_name, first.stamp_ns) == (True, 'x.png', 5)
    assert second.file_name == f'{RAW} at 6 ns' and not third.is_frame
    assert L.SKIP_REASONS  # the label reasons are unchanged


def test_command_errors(bag, tmp_path, capsys):
    frames = labels_for(tmp_path / 'frames.json', [frame_entry(RAW, T0)], {})
    files = labels_for(tmp_path / 'files.json', [{'file_name': 'a.png'}], {})
    out = str(tmp_path / 'out')
    cases = [
        (['coco', str(frames), '-o', out], 'give the bags that hold them with --bag'),
        (['coco', str(files), '--bag', str(bag), '-o', out], 'no label entry names a bag'),
        (['coco', str(frames), '--bag', str(tmp_path / 'nope'), '-o', out], 'no bag at'),
        (['coco', str(frames), '--bag', str(frames), '-o', out], 'unknown storage'),
        (['coco', str(frames), '--bag', str(bag), '-o', str(bag)], 'choose another -o'),
        (['coco', str(frames), '--bag', str(next(bag.glob('*.mcap'))), '-o', str(bag)],
         'choose another -o'),
    ]
    for argv, message in cases:
        assert main(argv + ['--tiny-model', '--no-progress']) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count('\n') == 1 and 'Traceback' not in err, err
    with pytest.raises(EvaluationError, match='cannot read bag'):
        (tmp_path / 'broken.mcap').write_bytes(b'\x89MCAP0\r\n' + bytes(8))
        check_bags([tmp_path / 'broken.mcap'])
