# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Tracks between model results, on generated scenes made of photographs with known boxes.

Model results are the scenes' true boxes with noise on KOSMOS-2's 32x32 grid
(``kosmos_ros.testing.scenes``), at 1 Hz; frames at 30 Hz, 640x480. No DDS, no model. A
robot's camera: a photograph panned a few pixels a frame (320x240 where it suffices) with one
blurred or re-exposed frame, an exposure step, 5 grey frames, a resolution switch, and stamps
28 hours ahead; the exact true box as the model's.
"""

from dataclasses import replace
from typing import Iterator, NamedTuple

import numpy as np
import pytest

from kosmos_ros.datatypes import GroundedBox, GroundedPhrase, PixelBox
from kosmos_ros.images import frame_from_array
from kosmos_ros.testing.samples import load_photo
from kosmos_ros.testing.scenes import Scene, standard_scenes
from kosmos_ros.threads import opencv
import kosmos_ros.tracking.association as association
from kosmos_ros.tracking.tracker import (associate, FlowSettings, gray_for_tracking, iou_matrix,
                                         Track, Tracker, TrackerSettings, TrackingError,
                                         TrackState)

pytestmark = pytest.mark.fast  # in make test-fast: no DDS, no model

CUP, CAT_PAN, OCCLUDED, TWO_CUPS = standard_scenes(duration=4.0)


class Step(NamedTuple):
    stamp: float
    truth: tuple[PixelBox, ...]
    tracks: list[Track]
    result: bool  # a model result arrived on this frame


def run(scene: Scene, tracker: Tracker, latency: float = 0.0,
        frames: bool = True) -> Iterator[Step]:
    """Drive ``tracker`` through ``scene``: frames (unless not), results ``latency`` late."""
    rng = np.random.default_rng(scene.seed)
    pending = []
    for index, stamp in enumerate(scene.stamps()):
        if scene.has_result(index):
            pending.append((stamp + latency, stamp,
                            list(scene.model_result(stamp, rng).detections())))
        if frames:
            tracker.propagate(stamp, gray_for_tracking(frame_from_array(scene.render(stamp))))
        arrived = [p for p in pending if p[0] <= stamp + 1e-9]
        pending = [p for p in pending if p[0] > stamp + 1e-9]
        for _, result_stamp, detections in arrived:
            tracker.update(result_stamp, detections)
        yield Step(stamp, scene.truth(stamp), tracker.tracks(), bool(arrived))


def ious_to_truth(step: Step) -> np.ndarray:
    """Return, per true object, the IoU of each reported track with it (objects x tracks)."""
    return iou_matrix(step.truth, [t.box for t in step.tracks])


def detection(phrase: str, box: PixelBox, score: float = 0.8):
    """Return one item as GroundingResult.detections() yields it."""
    grounded = GroundedBox(box, (0.0, 0.0, 1.0, 1.0), (0, 1023), score)
    return 0, 0, GroundedPhrase(phrase, 0, len(phrase), (grounded,)), grounded


def photo_gray(name: str = 'motorcycle_left', size=(640, 480)) -> np.ndarray:
    cv2 = opencv()
    return cv2.cvtColor(cv2.resize(load_photo(name), size), cv2.COLOR_RGB2GRAY)


def shifted(gray: np.ndarray, dx: float, dy: float) -> np.ndarray:
    cv2 = opencv()
    return cv2.warpAffine(gray, np.float32([[1, 0, dx], [0, 1, dy]]),
                          (gray.shape[1], gray.shape[0]), borderMode=cv2.BORDER_REFLECT)


# -- association -----------------------------------------------------------------------------

# Track A overlaps detection 0 most, but detection 0 is track B's only match; a greedy pass
# (highest IoU first) gives detection 0 to A and leaves B without a match.
TRACK_A, TRACK_B = PixelBox(100, 100, 200, 200), PixelBox(130, 100, 230, 200)
DETECTION_0, DETECTION_1 = PixelBox(110, 100, 210, 200), PixelBox(60, 100, 160, 200)


def greedy(overlap: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    pairs, used_rows, used_cols = [], set(), set()
    for r, c in sorted(np.ndindex(*overlap.shape), key=lambda rc: -overlap[rc]):
        if overlap[r, c] >= threshold and r not in used_rows and c not in used_cols:
            pairs.append((r, c))
            used_rows.add(r)
            used_cols.add(c)
    return sorted(pairs)


def test_assignment_finds_the_pairs_a_greedy_matcher_misses(monkeypatch):
    overlap = iou_matrix([TRACK_A, TRACK_B], [DETECTION_0, DETECTION_1])
    threshold = 0.3
    assert overlap[1, 1] < threshold  # B cannot take detection 1
    assert greedy(overlap, threshold) == [(0, 0)]  # B left without a match
    calls = []
    solver = association.linear_sum_assignment
    monkeypatch.setattr(association, 'linear_sum_assignment',
                        lambda cost: calls.append(cost) or solver(cost))
    pairs = associate([('cup', TRACK_A), ('cup', TRACK_B)],
                      [('cup', DETECTION_0), ('cup', DETECTION_1)], threshold)
    assert sorted(pairs) == [(0, 1), (1, 0)]
    assert len(calls) == 1


def test_tracker_keeps_both_ids_where_a_greedy_matcher_would_start_a_new_track():
    tracker = Tracker(TrackerSettings(iou_threshold=0.3))
    a, b = tracker.update(0.0, [detection('a cup', TRACK_A), detection('a cup', TRACK_B)])
    # The detections' order is no hint: the assignment alone decides.
    found = tracker.update(1.0, [detection('a cup', DETECTION_0),
                                 detection('a cup', DETECTION_1)])
    assert [t.track_id for t in found] == [b.track_id, a.track_id]
    assert [t.box for t in found] == [DETECTION_0, DETECTION_1]
    assert {t.track_id for t in tracker.tracks()} == {a.track_id, b.track_id}
    assert all(t.state is TrackState.CONFIRMED and t.hits == 2 for t in found)


def test_phrases_never_match_across_and_compare_without_case_or_spacing():
    tracker = Tracker()
    cup, = tracker.update(0.0, [detection('a cup', TRACK_A)])
    cat, = tracker.update(1.0, [detection('a cat', TRACK_A)])
    again, = tracker.update(2.0, [detection('A  Cup ', TRACK_A)])
    assert cat.track_id != cup.track_id
    assert again.track_id == cup.track_id and again.phrase == 'A  Cup '
    assert associate([('a cup', TRACK_A)], [], 0.2) == []


# -- following objects -----------------------------------------------------------------------

def test_ids_persist_and_boxes_follow_the_object_between_model_results():
    tracked = list(run(CUP, Tracker()))
    held = list(run(CUP, Tracker(), frames=False))
    assert {t.track_id for step in tracked for t in step.tracks} == {1}
    between = [s for s in tracked if not s.result]
    ious = [float(ious_to_truth(s)[0, 0]) for s in between]
    held_ious = [float(ious_to_truth(s)[0, 0]) for s in held if not s.result]
    assert min(ious) >= 0.7, min(ious)
    assert np.mean(ious) >= 0.8
    assert np.mean(ious) >= np.mean(held_ious) + 0.2, (np.mean(ious), np.mean(held_ious))
    last = tracked[-1].tracks[0]
    assert last.state is TrackState.CONFIRMED and last.hits == 4
    assert last.last_update == tracked[-1].stamp and last.last_confirmed == 3.0


def test_boxes_follow_a_panning_camera_and_a_size_change():
    steps = list(run(CAT_PAN, Tracker()))
    ious = [float(ious_to_truth(s)[0, 0]) for s in steps if not s.result]
    assert min(ious) >= 0.7 and np.mean(ious) >= 0.8
    sizes = [s.truth[0].height for s in steps]
    assert max(sizes) / min(sizes) > 1.25  # the scene does change scale


def test_look_alikes_keep_their_identities_as_they_pass_each_other():
    ids_per_object: list[set[int]] = [set(), set()]
    closest = np.inf
    for step in run(TWO_CUPS, Tracker()):
        upper, lower = step.truth
        closest = min(closest, lower.y1 - upper.y2)
        overlap = ious_to_truth(step)
        assert len(step.tracks) == 2
        for obj in range(2):
            best = int(np.argmax(overlap[obj]))
            assert overlap[obj, best] >= 0.6, (step.stamp, overlap)
            ids_per_object[obj].add(step.tracks[best].track_id)
    assert closest < 15  # the scene brings them within a few pixels
    assert [len(ids) for ids in ids_per_object] == [1, 1]
    assert ids_per_object[0] != ids_per_object[1]


def test_a_partly_occluded_object_stays_tracked():
    occluded_from = OCCLUDED.occlusion_start()
    assert occluded_from is not None and occluded_from < 3.0
    steps = [s for s in run(OCCLUDED, Tracker()) if s.stamp >= occluded_from]
    assert {t.track_id for s in steps for t in s.tracks} == {1}
    assert min(float(ious_to_truth(s)[0, 0]) for s in steps) >= 0.5


def test_a_late_model_result_lands_where_its_object_is_now():
    for step in run(CUP, Tracker(), latency=0.3):
        if step.stamp >= 0.3 - 1e-9:  # the first result arrived; the object moved ~40 px since
            assert len(step.tracks) == 1, step.stamp
            assert float(ious_to_truth(step)[0, 0]) >= 0.7, step.stamp
    assert step.tracks[0].track_id == 1


# -- ageing, loss, time ----------------------------------------------------------------------

def test_a_track_ages_out_after_max_age_without_confirmation():
    gray = photo_gray()
    tracker = Tracker(TrackerSettings(track_max_age=1.0))
    track, = tracker.update(0.0, [detection('a motorcycle', PixelBox(200, 150, 440, 330))])
    tracker.propagate(0.0, gray)
    for stamp in np.arange(1, 31) / 30.0:
        tracks = tracker.propagate(float(stamp), gray)
        assert [t.track_id for t in tracks] == [track.track_id]
        assert tracks[0].confirmation_age(float(stamp)) == pytest.approx(stamp)
    assert tracker.propagate(1.0 + 1.0 / 30.0, gray) == []
    assert tracker.get(track.track_id) is None


def test_without_coasting_a_track_whose_points_vanish_is_lost_until_a_result_confirms_it():
    gray = photo_gray()
    box = PixelBox(200, 150, 440, 330)
    tracker = Tracker(TrackerSettings(coast_seconds=0.0))
    tracker.propagate(0.0, gray)
    track, = tracker.update(0.0, [detection('a motorcycle', box)])
    assert tracker.propagate(0.1, shifted(gray, 3, 2))[0].box.x1 == pytest.approx(203, abs=0.5)
    assert tracker.propagate(0.2, np.full_like(gray, 128)) == []  # nothing to follow
    lost, = tracker.tracks(include_lost=True)
    assert lost.state is TrackState.LOST and lost.lost_since == 0.2 and not lost.followed
    assert lost.box.x1 == pytest.approx(203, abs=0.5)  # where it was seen last
    tracker.propagate(0.3, gray)
    again, = tracker.update(0.3, [detection('a motorcycle', box)])
    assert again.track_id == track.track_id and again.state is TrackState.CONFIRMED
    assert again.lost_since is None and tracker.tracks() == [again]


def test_a_result_before_any_frame_is_seeded_on_the_next_frame():
    gray = photo_gray()
    tracker = Tracker()
    box = PixelBox(200, 150, 440, 330)
    track, = tracker.update(5.0, [detection('a motorcycle', box)])
    assert track.box == box and track.last_update == 5.0
    tracker.propagate(5.0, gray)
    moved, = tracker.propagate(5.1, shifted(gray, -4, 3))
    assert (moved.box.x1, moved.box.y1) == (pytest.approx(196, abs=0.5),
                                            pytest.approx(153, abs=0.5))


def test_time_going_back_resets_and_a_repeated_stamp_is_ignored():
    gray = photo_gray()
    tracker = Tracker()
    tracker.propagate(10.0, gray)
    track, = tracker.update(10.0, [detection('a motorcycle', PixelBox(200, 150, 440, 330))])
    assert tracker.propagate(10.0, shifted(gray, 5, 0))[0].box == track.box
    assert tracker.propagate(1.0, gray) == []  # a bag started over
    assert tracker.get(track.track_id) is None
    newer, = tracker.update(1.0, [detection('a motorcycle', PixelBox(200, 150, 440, 330))])
    assert newer.track_id == track.track_id + 1  # ids keep increasing


def test_propagate_without_tracks_runs_no_flow(monkeypatch):
    import kosmos_ros.tracking.following as following

    def refuse(*args):
        raise AssertionError('flow ran without tracks')

    monkeypatch.setattr(following, 'follow_points', refuse)
    monkeypatch.setattr(following, 'seed_points', refuse)
    tracker = Tracker()
    gray = photo_gray()
    for stamp in range(5):
        assert tracker.propagate(float(stamp), gray) == []


# -- frames ----------------------------------------------------------------------------------

def test_large_frames_are_followed_downscaled_with_boxes_in_frame_pixels():
    gray = photo_gray(size=(1280, 960))
    tracker = Tracker(TrackerSettings(flow=FlowSettings(max_width=640)))
    tracker.propagate(0.0, gray)
    box = PixelBox(400, 300, 880, 660)
    tracker.update(0.0, [detection('a motorcycle', box)])
    moved, = tracker.propagate(0.1, shifted(gray, 8, -6))
    assert moved.box.x1 == pytest.approx(408, abs=1.0)
    assert moved.box.y1 == pytest.approx(294, abs=1.0)
    assert moved.box.width == pytest.approx(box.width, rel=0.01)


@pytest.mark.parametrize('order', ['rgb', 'bgr', 'rgba', 'bgra', 'mono'])
def test_gray_for_tracking_reads_every_channel_order(order):
    cv2 = opencv()
    rgb = load_photo('coffee')
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    array = {'rgb': rgb, 'bgr': rgb[:, :, ::-1], 'rgba': np.dstack([rgb, rgb[:, :, :1]]),
             'bgra': np.dstack([rgb[:, :, ::-1], rgb[:, :, :1]]), 'mono': expected}[order]
    gray = gray_for_tracking(frame_from_array(np.ascontiguousarray(array), order))
    assert gray.shape == expected.shape and gray.dtype == np.uint8
    assert np.abs(gray.astype(int) - expected).max() <= 1


@pytest.mark.parametrize('gray, match', [
    (np.zeros((480, 640, 3), np.uint8), 'grey image, got shape'),
    (np.zeros((480, 640), np.float32), 'uint8'),
    (np.zeros((8, 640), np.uint8), 'too small'),
    ([[0]], 'numpy array'),
])
def test_bad_frames_are_refused(gray, match):
    with pytest.raises(TrackingError, match=match):
        Tracker().propagate(0.0, gray)


@pytest.mark.parametrize('change, match', [
    (dict(track_max_age=0.0), 'track_max_age'),
    (dict(iou_threshold=0.0), 'iou_threshold'),
    (dict(replay_seconds=-1.0), 'replay_seconds'),
])
def test_bad_tracker_settings_are_refused(change, match):
    with pytest.raises(TrackingError, match=match):
        replace(TrackerSettings(), **change)


@pytest.mark.parametrize('change, match', [
    (dict(window=10), 'window'),
    (dict(min_points=50), 'min_points'),
    (dict(redetect_below=2), 'redetect_below'),
    (dict(margin=0.5), 'margin'),
    (dict(max_scale_step=0.0), 'max_scale_step'),
])
def test_bad_flow_settings_are_refused(change, match):
    with pytest.raises(TrackingError, match=match):
        FlowSettings(**change)


# -- a robot's camera: bad frames, occlusion, resizing, stamps from the future ---------------

SMALL = (320, 240)
SMALL_BOX = PixelBox(100, 70, 200, 150)


def panning(steps: int, dx: float, dy: float, size=SMALL, box=SMALL_BOX, photo='coffee'):
    """Yield (index, stamp, grey frame, true box) of a camera panning ``dx, dy`` px a frame.

    On 'coffee' at 320x240 the flow of one pair with a blurred or re-exposed frame fails.
    """
    gray = photo_gray(photo, size=size)
    for k in range(steps):
        yield (k, k / 30.0, shifted(gray, dx * k, dy * k),
               PixelBox(box.x1 + dx * k, box.y1 + dy * k, box.x2 + dx * k, box.y2 + dy * k))


def blurred(gray: np.ndarray) -> np.ndarray:
    return opencv().GaussianBlur(gray, (0, 0), 2.5)


def exposed(gray: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(gray.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)


def iou(a: PixelBox, b: PixelBox) -> float:
    return float(iou_matrix([a], [b])[0, 0])


@pytest.mark.parametrize('spoil', [blurred, lambda g: exposed(g, 0.6),
                                   lambda g: exposed(g, 1.5)],
                         ids=['blur', 'exposure x0.6', 'exposure x1.5'])
def test_one_bad_frame_keeps_the_track_and_its_box(spoil):
    tracker = Tracker()
    seen = []
    for k, stamp, gray, truth in panning(16, 6, 2):
        tracker.propagate(stamp, spoil(gray) if k == 8 else gray)
        if k == 0:
            track, = tracker.update(0.0, [detection('a cup', truth)])
        now, = tracker.tracks()  # never lost: published on every frame
        assert now.track_id == track.track_id and iou(now.box, truth) >= 0.8, (k, now)
        seen.append(now)
    assert all(t.followed and t.motion in ('tracked', 'predicted') for t in seen)
    assert seen[-1].motion == 'tracked' and seen[-1].predicted_since is None


@pytest.mark.parametrize('gain', [0.6, 1.5])
def test_an_exposure_step_keeps_the_track_followed(gain):
    tracker = Tracker()
    seen = []
    for k, stamp, gray, truth in panning(16, 6, 2):
        tracker.propagate(stamp, exposed(gray, gain) if k >= 8 else gray)
        if k == 0:
            track, = tracker.update(0.0, [detection('a cup', truth)])
        now, = tracker.tracks()
        assert now.track_id == track.track_id and iou(now.box, truth) >= 0.8, (k, now)
        seen.append(now)
    assert [t.motion for t in seen] == ['tracked'] * 16  # the flow never failed


def test_an_object_hidden_for_five_frames_at_10_px_a_frame_keeps_its_id():
    """Five grey frames at 10 px a frame: predicted meanwhile, then followed again."""
    tracker = Tracker()
    box = PixelBox(60, 150, 160, 250)
    hidden = range(13, 18)
    seen = []
    for k, stamp, gray, truth in panning(26, 10, 0, (640, 480), box, 'motorcycle_left'):
        tracker.propagate(stamp, np.full_like(gray, 128) if k in hidden else gray)
        if k in (0, 10, 20):  # the model sees it before and after
            found, = tracker.update(stamp, [detection('a motorcycle', truth)])
            assert found.track_id == 1, k
        now, = tracker.tracks()
        assert now.track_id == 1 and iou(now.box, truth) >= 0.6, (k, now)
        seen.append(now)
    assert [t.motion for t in seen[12:19]] == ['tracked'] + ['predicted'] * 5 + ['tracked']
    for k in hidden:  # predicted while hidden; the flow found it again on frame 18
        assert seen[k].state is TrackState.PREDICTED and seen[k].predicted_since == 13 / 30
        assert seen[k].coasted == pytest.approx((k - 13) / 30)


def test_an_object_that_stopped_while_hidden_keeps_its_id_when_the_model_finds_it():
    """Panning 12 px a frame, then 5 grey frames, then the camera stands still.

    The prediction runs on, so the flow cannot find the object again, and the predicted box
    is far from the model's (no overlap); the model's result still confirms the same track.
    """
    gray = photo_gray('motorcycle_left', size=(640, 480))
    box = PixelBox(60, 150, 140, 230)
    tracker = Tracker()
    seen = []
    for k in range(24):
        shift = 12 * min(k, 12)
        truth = PixelBox(box.x1 + shift, box.y1, box.x2 + shift, box.y2)
        tracker.propagate(k / 30, np.full_like(gray, 128) if 13 <= k < 18
                          else shifted(gray, shift, 0))
        if k in (0, 10, 20):
            before = tracker.tracks()
            found, = tracker.update(k / 30, [detection('a motorcycle', truth)])
            assert found.track_id == 1, k
            if k == 20:
                assert iou(before[0].box, truth) == 0.0  # matched by its reach, not overlap
        now, = tracker.tracks()  # published all along
        seen.append(now)
    assert [t.motion for t in seen[13:20]] == ['predicted'] * 7
    assert seen[-1].motion == 'tracked' and iou(seen[-1].box, truth) >= 0.9


def test_a_predicted_box_reaches_detections_within_its_reach_alone():
    predicted, near = PixelBox(100, 100, 180, 180), PixelBox(170, 100, 250, 180)
    assert iou(predicted, near) < 0.2
    assert associate([('cup', predicted)], [('cup', near)], 0.2) == []
    assert associate([('cup', predicted)], [('cup', near)], 0.2, [80.0]) == [(0, 0)]
    assert associate([('cup', predicted)], [('cat', near)], 0.2, [80.0]) == []
    far = PixelBox(260, 100, 340, 180)
    assert associate([('cup', predicted)], [('cup', far)], 0.2, [80.0]) == []
    big = PixelBox(150, 60, 330, 240)  # within reach, but four times the area and more
    assert associate([('cup', predicted)], [('cup', big)], 0.2, [200.0]) == []
    # A followed track's overlap wins over a predicted track's reach.
    followed = PixelBox(165, 100, 245, 180)
    assert associate([('cup', predicted), ('cup', followed)], [('cup', near)], 0.2,
                     [80.0, 0.0]) == [(1, 0)]


def test_a_track_coasts_for_coast_seconds_then_is_lost():
    gray = photo_gray(size=SMALL)
    tracker = Tracker(TrackerSettings(coast_seconds=0.2))
    tracker.propagate(0.0, gray)
    track, = tracker.update(0.0, [detection('a motorcycle', SMALL_BOX)])
    tracker.propagate(1 / 30, shifted(gray, 3, 0))
    seen = tracker.get(track.track_id).box
    grey = np.full_like(gray, 128)
    for k in range(2, 10):  # predicted from 2/30 s; 0.2 s later (k = 8) it is lost
        tracks = tracker.propagate(k / 30, grey)
        if k < 8:
            assert [t.motion for t in tracks] == ['predicted'], k
        else:
            assert tracks == [], k
    lost, = tracker.tracks(include_lost=True)
    assert lost.state is TrackState.LOST and not lost.followed and lost.motion == 'lost'
    assert lost.lost_since == pytest.approx(8 / 30) and lost.box == seen  # where seen last
    assert lost.predicted_since is None and lost.coasted == 0.0


def test_a_model_box_on_a_blank_wall_is_lost_at_once_not_predicted():
    gray = photo_gray(size=SMALL)
    gray[:, :160] = 128  # the left half is blank: no corners to follow
    tracker = Tracker()
    tracker.propagate(0.0, gray)
    blank, textured = tracker.update(0.0, [detection('a wall', PixelBox(20, 60, 120, 160)),
                                           detection('a cup', PixelBox(200, 60, 300, 160))])
    assert blank.motion == 'lost' and blank.lost_since == 0.0
    assert textured.motion == 'tracked' and [t.phrase for t in tracker.tracks()] == ['a cup']


@pytest.mark.parametrize('weight', [1.0, 0.4])
def test_a_result_on_a_followed_track_is_blended_with_its_box_by_model_weight(weight):
    gray = photo_gray(size=SMALL)
    tracker = Tracker(TrackerSettings(model_weight=weight))
    tracker.propagate(0.0, gray)
    tracker.update(0.0, [detection('a cup', SMALL_BOX)])
    followed, = tracker.propagate(0.1, gray)
    model = PixelBox(110, 70, 210, 150)  # the model says 10 px further right
    confirmed, = tracker.update(0.1, [detection('a cup', model)])
    assert confirmed.hits == 2 and confirmed.motion == 'tracked'
    assert confirmed.box.x1 == pytest.approx(weight * 110 + (1 - weight) * followed.box.x1)
    far = PixelBox(160, 70, 260, 150)  # overlapping the followed box by less than 0.5
    assert iou(far, confirmed.box) < 0.5
    again, = tracker.update(0.1, [detection('a cup', far)])
    assert again.box == far  # the followed box drifted: the model's is taken as it is


@pytest.mark.parametrize('change, match', [
    (dict(coast_seconds=-1.0), 'coast_seconds'),
    (dict(coast_seconds=float('inf')), 'coast_seconds'),
    (dict(model_weight=0.0), 'model_weight'),
])
def test_bad_coasting_settings_are_refused(change, match):
    with pytest.raises(TrackingError, match=match):
        TrackerSettings(**change)


def test_a_camera_switching_resolution_rescales_the_boxes():
    big = photo_gray(size=(640, 480))
    box = PixelBox(200, 150, 400, 330)
    tracker = Tracker()
    tracker.propagate(0.0, big)
    track, = tracker.update(0.0, [detection('a motorcycle', box)])
    small = opencv().resize(big, (320, 240), interpolation=opencv().INTER_AREA)
    now, = tracker.propagate(0.1, small)
    half = PixelBox(100, 75, 200, 165)
    assert now.track_id == track.track_id and iou(now.box, half) >= 0.95, now.box
    assert now.motion == 'tracked'
    moved, = tracker.propagate(0.2, shifted(small, 5, 3))  # followed at the new size
    assert iou(moved.box, PixelBox(105, 78, 205, 168)) >= 0.9, moved.box


def test_a_frame_of_another_shape_loses_the_tracks():
    tracker = Tracker()
    gray = photo_gray(size=(640, 480))
    tracker.propagate(0.0, gray)
    track, = tracker.update(0.0, [detection('a motorcycle', PixelBox(200, 150, 400, 330))])
    assert tracker.propagate(0.1, np.ascontiguousarray(gray[:, :480])) == []
    lost, = tracker.tracks(include_lost=True)
    assert lost.track_id == track.track_id and lost.state is TrackState.LOST


FUTURE = 28 * 3600.0  # stamps 28 hours ahead


def test_a_result_stamped_in_the_future_does_not_make_a_track_immortal():
    gray = photo_gray(size=SMALL)
    tracker = Tracker(TrackerSettings(track_max_age=1.0))
    tracker.propagate(0.0, gray)
    track, = tracker.update(0.0, [detection('a motorcycle', SMALL_BOX)])
    tracker.propagate(0.5, gray)
    again, = tracker.update(0.5 + FUTURE, [detection('a motorcycle', SMALL_BOX)])
    assert again.track_id == track.track_id  # the same track, not one that outlives the rest
    assert again.last_confirmed == 0.5  # counted from the latest frame, not from 28 h ahead
    for stamp in np.arange(16, 46) / 30.0:  # 0.53 to 1.5 s
        now, = tracker.propagate(float(stamp), gray)
        assert now.last_confirmed <= stamp and 0.0 <= now.confirmation_age(stamp) <= 1.0
    assert tracker.propagate(1.6, gray) == []  # aged out 1 s after the honest confirmation
    assert tracker.tracks(include_lost=True) == []


def test_a_frame_stamped_in_the_future_starts_the_tracker_over():
    gray = photo_gray(size=SMALL)
    tracker = Tracker(TrackerSettings(track_max_age=1.0))
    tracker.propagate(0.0, gray)
    tracker.update(0.0, [detection('a motorcycle', SMALL_BOX)])
    tracker.propagate(FUTURE, gray)
    tracker.update(FUTURE, [detection('a motorcycle', SMALL_BOX)])
    assert tracker.propagate(0.1, gray) == []  # normal stamps again: a restart
    track, = tracker.update(0.1, [detection('a motorcycle', SMALL_BOX)])
    assert tracker.propagate(1.0, gray)[0].confirmation_age(1.0) == pytest.approx(0.9)
    assert tracker.propagate(1.2, gray) == []  # and ageing works again
    # Without frames: a result far ahead, then normal stamps, start over too.
    held = Tracker(TrackerSettings(track_max_age=1.0))
    held.update(FUTURE, [detection('a motorcycle', SMALL_BOX)])
    held.update(0.2, [])
    assert held.tracks(include_lost=True) == []
