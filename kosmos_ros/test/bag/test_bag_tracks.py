# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``ground_bag --track``: tracks with lasting ids written into the output bag.

The sample stream (a real photograph, panned slowly) grounded by the tiny model steered to
'a cat' (one box) and 'two cups' (two boxes) on every grounded frame; bags written and read back
with rosbags. Grounding runs slower than the frame rate, so most tracked frames are throttled
ones, on which only the optical flow moves the boxes.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from kosmos_ros.bag import ground_bag as gb
from kosmos_ros.bag.sample import DEPTH_TOPIC, make_sample_bag, SampleSpec
from kosmos_ros.bag.typestore import IMAGE, project_typestore
from kosmos_ros.datatypes import Query, Task
from kosmos_ros.images import frame_from_message
from kosmos_ros.testing.tiny_model import TINY_LABEL
from kosmos_ros.tracking.stream import TrackStream
from kosmos_ros.tracking.tracker import TrackerSettings, TrackingError

from helpers import read_bag, stamp_of  # noqa: I100

RAW = '/camera/image_raw'
FRAMES = 12  # 1.2 s at 10 Hz
GROUNDED = (0, 4, 8)  # --rate-hz 2.5 of a 10 Hz stream: every fourth frame


def tracks_of(msg):
    """Return {track id: (phrase, score, (cx, cy, w, h))} of a tracks message."""
    return {int(d.id): (d.results[0].hypothesis.class_id, d.results[0].hypothesis.score,
                        (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x,
                         d.bbox.size_y))
            for d in msg.detections}


def boxes_of(msg):
    """Return sorted (phrase, (cx, cy, w, h)) of a detections message."""
    return sorted((d.results[0].hypothesis.class_id,
                   (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x,
                    d.bbox.size_y)) for d in msg.detections)


def options(bag, out, **kw):
    return gb.GroundBagOptions(bag=Path(bag), output=Path(out), **kw)


@pytest.fixture(scope='module')
def stream(tmp_path_factory):
    """12 frames of 320x240 at 10 Hz of one photograph, panned."""
    root = tmp_path_factory.mktemp('track_bags')
    return make_sample_bag(root / 'ten', SampleSpec(rate_hz=10.0, duration_s=1.2, width=320,
                                                    height=240, photos=('chelsea',)))


@pytest.fixture(scope='module')
def tracked(stream, steered, tmp_path_factory):
    """Ground the stream at 2.5 Hz with --track; return (summary, outcomes, output content)."""
    out = tmp_path_factory.mktemp('tracked') / 'out'
    seen = []
    summary = gb.ground_bag(options(stream.path, out, topics=(RAW,), rate_hz=2.5, track=True),
                            steered, on_frame=seen.append)
    return summary, seen, read_bag(out)


def test_one_tracks_message_per_admitted_frame(stream, tracked):
    summary, seen, content = tracked
    s = summary.topics[RAW]
    assert (s.messages, s.grounded, s.throttled, s.tracks) == (FRAMES, 3, FRAMES - 3, FRAMES)
    assert summary.skipped == 0 and not s.not_tracked and summary.tracks == FRAMES
    outputs = ['/camera/detections', '/camera/grounding', '/camera/track_states',
               '/camera/tracks']
    assert sorted(content) == outputs and sorted(s.outputs) == outputs
    source, tracks = read_bag(stream.path)[RAW], content['/camera/tracks']
    assert len(tracks) == FRAMES
    # Every track with its state, at the same bag times and headers: those on tracks are
    # tracked or predicted (0, 1); the others lost (2).
    states = content['/camera/track_states']
    assert [t for t, _ in states] == [t for t, _ in tracks]
    for (_, listed), (_, every) in zip(tracks, states):
        assert stamp_of(every) == stamp_of(listed)
        state = {t.track_id: t.state for t in every.tracks}
        assert {int(d.id) for d in listed.detections} <= set(state)
        assert all(state[int(d.id)] in (0, 1) for d in listed.detections)
        assert all(v == 2 for k, v in state.items()
                   if k not in {int(d.id) for d in listed.detections})
    for (t_src, src), (t_tr, msg) in zip(source, tracks):
        assert t_tr == t_src  # at the source image's bag time
        assert stamp_of(msg) == stamp_of(src) and msg.header.frame_id == 'camera_optical_frame'
        assert all(stamp_of(d) == stamp_of(src) for d in msg.detections)
    # Grounded frames: the tracks hold the model's boxes on the first (new tracks); on later
    # ones, the model's boxes blended with the boxes the flow followed
    # (TrackerSettings.model_weight): nearer the model's than on the frame before. (The
    # steered model gives the same boxes on every grounded frame while the photograph pans.)
    detections = content['/camera/detections']
    assert [t for t, _ in detections] == [source[i][0] for i in GROUNDED]
    for (_, det), i in zip(detections, GROUNDED):
        on_frame = sorted((phrase, box) for phrase, _, box in tracks_of(tracks[i][1]).values())
        before = sorted((p, box) for p, _, box in tracks_of(tracks[max(i - 1, 0)][1]).values())
        expected = boxes_of(det)
        assert len(expected) == 3
        assert [phrase for phrase, _ in on_frame] == [phrase for phrase, _ in expected]
        for (_, box), (_, was), (_, want) in zip(on_frame, before, expected):
            if i == 0:
                assert box == pytest.approx(want, abs=1e-3)
            else:
                assert np.abs(np.subtract(box, want)).sum() < np.abs(np.subtract(was,
                                                                                 want)).sum()
    assert [o.tracks is not None for o in seen] == [True] * FRAMES
    assert [len(o.tracks) for o in seen] == [len(m.detections) for _, m in tracks]
    describe = summary.describe()
    assert 'rate: 2.5 Hz of message time, tracking: every frame' in describe
    assert f'  tracks: {FRAMES} messages on /camera/tracks, 0 frames could not be tracked' in \
        describe
    assert f'{FRAMES - 3} throttled, 0 skipped -> /camera/detections, /camera/grounding, ' \
        '/camera/tracks' in describe


def test_track_ids_last_across_grounded_frames(tracked):
    _, _, content = tracked
    frames = [tracks_of(m) for _, m in content['/camera/tracks']]
    # The first frame is grounded: its three boxes start tracks 1 to 3, in detection order.
    assert {i: phrase for i, (phrase, _, _) in frames[0].items()} == \
        {1: 'a cat', 2: 'two cups', 3: 'two cups'}
    for index, tracks in enumerate(frames):
        # Every later model result confirms the same three tracks: no new id, none lost.
        assert {i: phrase for i, (phrase, _, _) in tracks.items()} == \
            {1: 'a cat', 2: 'two cups', 3: 'two cups'}, index
    # Between model results the flow moves the boxes with the pan (the photograph slides left
    # in the frame), and each result moves the cat back towards the model's box (the same on
    # every grounded frame; blended with the followed box, TrackerSettings.model_weight).
    cat = [tracks[1][2] for tracks in frames]
    assert cat[3][0] < cat[4][0] < cat[0][0] and cat[7][0] < cat[8][0] < cat[0][0]
    assert cat[3][0] < cat[0][0] - 1.0 and cat[7][0] < cat[4][0] - 1.0
    assert all(cat[i + 1][0] < cat[i][0] for i in (0, 1, 2, 4, 5, 6, 8, 9, 10))


def test_tracks_are_the_track_streams(stream, tracked, steered):
    """Run the node's TrackStream by hand over the same frames: the bag holds its tracks."""
    _, _, content = tracked
    stream_ = TrackStream(TrackerSettings(), 0.0)
    expected = []
    for index, (_, msg) in enumerate(read_bag(stream.path)[RAW]):
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        frame = frame_from_message(msg)
        stream_.on_frame(stamp, frame)
        if index in GROUNDED:
            stream_.on_result(stamp, steered.ground(frame, Query(Task.CAPTION)), 0.0)
        expected.append({t.track_id: (t.phrase, t.score, (*t.box.center, t.box.width,
                                                          t.box.height))
                         for t in stream_.tracks()})
    written = [tracks_of(m) for _, m in content['/camera/tracks']]
    assert len(written) == len(expected) == FRAMES
    for got, want in zip(written, expected):
        assert sorted(got) == sorted(want)
        for track_id, (phrase, score, box) in want.items():
            assert got[track_id][0] == phrase
            assert got[track_id][1] == pytest.approx(score)
            assert got[track_id][2] == pytest.approx(box, abs=1e-3)


def test_track_rate_halves_the_tracks_of_a_faster_stream(tmp_path, quick):
    spec = dict(duration_s=0.6, width=160, height=120, photos=('coffee',))
    fast = make_sample_bag(tmp_path / 'fast', SampleSpec(rate_hz=20.0, **spec))
    slow = make_sample_bag(tmp_path / 'slow', SampleSpec(rate_hz=10.0, **spec))
    counts = {}
    for name, bag, rate in (('fast', fast, 10.0), ('fast_all', fast, 0.0), ('slow', slow, 10.0)):
        summary = gb.ground_bag(options(bag.path, tmp_path / f'out_{name}', topics=(RAW,),
                                        rate_hz=2.0, track=True, track_rate_hz=rate), quick)
        tracks = read_bag(tmp_path / f'out_{name}')['/camera/tracks']
        assert summary.topics[RAW].tracks == len(tracks)
        counts[name] = [stamp_of(m)[:2] for _, m in tracks]
        assert summary.topics[RAW].grounded == 2  # at 0 and 0.5 s
    assert len(fast.stamps_ns) == 12 and len(slow.stamps_ns) == 6
    assert counts['fast_all'] == [divmod(s, 10**9) for s in fast.stamps_ns]
    assert counts['fast'] == [divmod(s, 10**9) for s in fast.stamps_ns[::2]]  # every other
    assert counts['slow'] == [divmod(s, 10**9) for s in slow.stamps_ns]  # 10 Hz of 10 Hz: all


def test_depth_gives_tracks_3d(tmp_path, steered):
    bag = make_sample_bag(tmp_path / 'depth', SampleSpec(
        rate_hz=10.0, duration_s=0.6, width=320, height=240, photos=('chelsea',),
        depth='32FC1'))
    out = tmp_path / 'out'
    summary = gb.ground_bag(options(bag.path, out, topics=(RAW,), rate_hz=5.0, track=True),
                            steered)
    s = summary.topics[RAW]
    assert (s.grounded, s.throttled, s.tracks) == (3, 3, 6)
    assert s.outputs[-3:] == ['/camera/tracks', '/camera/track_states', '/camera/tracks_3d']
    assert 'messages on /camera/tracks and /camera/tracks_3d' in summary.describe()
    content = read_bag(out)
    source, tracks = read_bag(bag.path)[RAW], content['/camera/tracks']
    tracks_3d = content['/camera/tracks_3d']
    assert DEPTH_TOPIC in read_bag(bag.path) and len(tracks_3d) == 6
    assert [t for t, _ in tracks_3d] == [t for t, _ in tracks] == [t for t, _ in source]
    with_3d = 0
    for (_, src), (_, flat), (_, deep) in zip(source, tracks, tracks_3d):
        assert stamp_of(deep) == stamp_of(src)
        ids = {d.id: d.results[0].hypothesis.class_id for d in flat.detections}
        assert {d.id: d.results[0].hypothesis.class_id for d in deep.detections}.items() <= \
            ids.items()
        for d in deep.detections:
            assert stamp_of(d) == stamp_of(src)
            assert 1.0 < d.bbox.center.position.z < 6.5  # the scene's depths
            assert d.bbox.size.x > 0 and d.bbox.size.y > 0
            with_3d += 1
    assert with_3d >= 6  # the cat's box overlaps the subject on every frame
    # On the first grounded frame the tracks are the model's boxes (later, blended with the
    # followed ones: TrackerSettings.model_weight), so their 3D is the detections'.
    for (t, det3d) in content['/camera/detections_3d'][:1]:
        deep = dict(tracks_3d)[t]
        cat = [d for d in det3d.detections if d.results[0].hypothesis.class_id == 'a cat']
        cat_track = [d for d in deep.detections if d.id == '1']
        assert len(cat) == len(cat_track) == 1
        a, b = cat[0].bbox, cat_track[0].bbox
        assert (b.center.position.x, b.center.position.y, b.center.position.z) == \
            pytest.approx((a.center.position.x, a.center.position.y, a.center.position.z))
        assert (b.size.x, b.size.y, b.size.z) == pytest.approx((a.size.x, a.size.y, a.size.z))


def test_without_track_nothing_changes(stream, quick, tmp_path):
    summary = gb.ground_bag(options(stream.path, tmp_path / 'out', topics=(RAW,), rate_hz=2.5),
                            quick)
    assert sorted(read_bag(tmp_path / 'out')) == ['/camera/detections', '/camera/grounding']
    assert summary.tracks == 0 and summary.topics[RAW].outputs == [
        '/camera/detections', '/camera/grounding']
    lines = summary.describe().splitlines()[1:]  # the first one names the paths
    assert not [line for line in lines if 'track' in line]


def _image(store, sec, rgb, data=None):
    types = store.types
    header = types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=0), frame_id='cam')
    h, w = rgb.shape[:2]
    return types[IMAGE](header=header, height=h, width=w, encoding='rgb8', is_bigendian=0,
                        step=w * 3, data=rgb.reshape(-1) if data is None else data)


def test_frames_the_tracker_cannot_use_are_counted(tmp_path, quick, photos):
    store = project_typestore()
    rgb = cv2.resize(photos['coffee'], (64, 48))
    tiny = cv2.resize(photos['coffee'], (12, 12))
    frames = [_image(store, 1, rgb), _image(store, 2, tiny),
              _image(store, 3, rgb, data=np.zeros(10, np.uint8)), _image(store, 4, rgb)]
    bag = tmp_path / 'odd'
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection('/cam/image_raw', IMAGE, typestore=store)
        for i, msg in enumerate(frames, 1):
            writer.write(conn, i * 10**9 + 5, store.serialize_cdr(msg, IMAGE))
    # 0.4 Hz: the frames at 1 s and 4 s are grounded, those at 2 s and 3 s only tracked.
    summary = gb.ground_bag(options(bag, tmp_path / 'out', rate_hz=0.4, track=True), quick)
    s = summary.topics['/cam/image_raw']
    assert (s.grounded, s.throttled, s.skipped_total, s.tracks) == (2, 2, 0, 2)
    reasons = sorted(s.not_tracked)
    assert len(reasons) == 2 and sum(s.not_tracked.values()) == 2
    assert reasons[0] == 'grey image of 12x12 is too small'
    assert reasons[1].startswith('rgb8 image 64x48: data holds 10 bytes')
    content = read_bag(tmp_path / 'out')
    assert [(t, m.header.stamp.sec) for t, m in content['/cam/tracks']] == \
        [(10**9 + 5, 1), (4 * 10**9 + 5, 4)]
    assert '  not tracked 1x: grey image of 12x12 is too small' in summary.describe()
    assert '2 frames could not be tracked' in summary.describe()


def test_bad_tracking_options_are_refused_before_any_output(stream, quick, tmp_path):
    with pytest.raises(TrackingError, match='track_max_age must be positive'):
        gb.ground_bag(options(stream.path, tmp_path / 'a', track=True, track_max_age=0.0),
                      quick)
    with pytest.raises(TrackingError, match='track_rate_hz must be 0 or more; got nan'):
        gb.ground_bag(options(stream.path, tmp_path / 'b', track=True,
                              track_rate_hz=float('nan')), quick)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('flags,message', [  # the node's rules (kosmos_ros.options)
    (['--track', '--track-rate-hz', '-1'], '--track-rate-hz must be at least 0; got -1.0'),
    (['--track', '--track-rate-hz', 'nan'], '--track-rate-hz must be a finite number; got nan'),
    (['--track', '--track-rate-hz', 'inf'], '--track-rate-hz must be a finite number; got inf'),
    (['--track', '--track-max-age', '0'], '--track-max-age must be at least 0.05; got 0.0'),
    (['--track', '--track-max-age', '-2'], '--track-max-age must be at least 0.05; got -2.0'),
    (['--track', '--track-max-age', 'inf'], '--track-max-age must be a finite number; got inf'),
    (['--track-rate-hz', '5'], '--track-rate-hz needs --track'),
    (['--track-max-age', '2'], '--track-max-age needs --track'),
    (['--track-rate-hz', '0', '--track-max-age', '2'],
     '--track-rate-hz and --track-max-age need --track'),
])
def test_bad_flags_are_errors(stream, tmp_path, capsys, flags, message):
    code = gb.main([str(stream.path), '-o', str(tmp_path / 'out'), '--tiny-model',
                    '--no-progress'] + flags)
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f'ground_bag: error: {message}'
    assert not (tmp_path / 'out').exists()


def test_command_line(stream, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('KOSMOS_ROS_TINY_MODEL_DIR', str(tiny_model_dir))
    args = gb._parser().parse_args(['bag'])
    assert (args.track, args.track_rate_hz, args.track_max_age) == (False, None, None)
    defaults = gb._options(args, '')
    assert (defaults.track, defaults.track_rate_hz, defaults.track_max_age) == (False, 0.0, 3.0)
    out = tmp_path / 'out'
    code = gb.main([str(stream.path), '-o', str(out), '--tiny-model', '--device', 'cpu',
                    '--max-new-tokens', '4', '--rate-hz', '2.5', '--topic', RAW, '--track',
                    '--track-rate-hz', '5', '--track-max-age', '1.5', '--no-progress'])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f'[{TINY_LABEL}]' in captured.out
    assert 'rate: 2.5 Hz of message time, tracking: 5 Hz of message time' in captured.out
    assert f'{RAW} (sensor_msgs/msg/Image): {FRAMES} messages, 3 grounded, 9 throttled, 0 ' \
        'skipped -> /camera/detections, /camera/grounding, /camera/tracks' in captured.out
    assert '  tracks: 6 messages on /camera/tracks, 0 frames could not be tracked' in \
        captured.out
    assert len(read_bag(out)['/camera/tracks']) == 6
