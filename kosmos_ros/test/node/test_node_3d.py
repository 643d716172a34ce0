# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""3D over DDS: colour, depth and camera_info publishers into the node; analytic geometry."""

import threading

from kosmos_ros_interfaces.srv import Ground
import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import MarkerArray

from kosmos_ros.model.boxes import normalized_to_pixels, patch_indices_to_normalized

from helpers import wait_for  # noqa: I100
from node_harness import NODE_TESTS, NodeHarness  # noqa: I100

FX, FY, CX, CY = 400.0, 410.0, 299.5, 199.5
PLANE, OBJECT = 2.5, 1.25


def depth_harness(ros, model_dir, steer, **params):
    """Return a node harness whose front camera has depth (``front/depth``) and info."""
    return NodeHarness(ros, model_dir, steer=steer, depth=('front',), **{
        **NODE_TESTS, 'rate_hz': 0.0, 'depth_tolerance': 0.02, **params})


@pytest.fixture
def rig(ros, tiny_model_dir, steer):
    h = depth_harness(ros, tiny_model_dir, steer)
    # The test's own copy of the depth stream: publish_scene sends the colour frame once the
    # depth image has crossed DDS, rather than after a pause.
    h.depth_seen, h.markers = [], []
    h.client.create_subscription(Image, 'front/depth', h.depth_seen.append, 10)
    yield h
    h.close()


def cat_box(width, height):
    return normalized_to_pixels(patch_indices_to_normalized(44, 863), width, height)


def publish_scene(h, rgb, offset=0.0, depth_offset=0.0, fill=None):
    """Publish a colour frame, its depth (plane with the steered 'a cat' box closer) and info."""
    height, width = rgb.shape[:2]
    stamp = h.now(offset)  # the depth's stamp is this one's plus depth_offset, however busy
    color = h.image(rgb, stamp)
    depth = np.full((height, width), PLANE, np.float32)
    box = cat_box(width, height)
    depth[int(box.y1):int(np.ceil(box.y2)), int(box.x1):int(np.ceil(box.x2))] = OBJECT
    if fill is not None:
        depth[:] = fill
    depth_msg = Image(height=height, width=width, encoding='32FC1', step=width * 4,
                      data=depth.tobytes())
    h.set_stamp(depth_msg, stamp + depth_offset, color.header.frame_id)
    info = CameraInfo(width=width, height=height, k=[FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0])
    info.header = depth_msg.header
    h.info_pubs['front'].publish(info)
    h.depth_pubs['front'].publish(depth_msg)
    assert wait_for(lambda: any(d.header == depth_msg.header for d in h.depth_seen))
    h.pubs['front'].publish(color)
    return color, box


def expected_center(box, z):
    u, v = (box.x1 + box.x2) / 2 - 0.5, (box.y1 + box.y2) / 2 - 0.5
    return ((u - CX) * z / FX, (v - CY) * z / FY, z)


def test_service_returns_3d_and_positions(rig, photos):
    color, box = publish_scene(rig, photos['coffee'])
    assert wait_for(lambda: rig.newest_is('front', color.header))
    response = rig.call(task=Ground.Request.CAPTION)
    assert response.success, response.message
    assert response.detections_3d.header == color.header
    cat = response.grounding.phrases[0]
    assert cat.text == 'a cat' and cat.has_position
    expected = expected_center(box, OBJECT)
    position = (cat.position.x, cat.position.y, cat.position.z)
    assert position == pytest.approx(expected, abs=1e-4)
    dets = [d for d in response.detections_3d.detections
            if d.results[0].hypothesis.class_id == 'a cat']
    assert len(dets) == 1
    size = dets[0].bbox.size
    assert (size.x, size.y) == pytest.approx((box.width * OBJECT / FX,
                                              box.height * OBJECT / FY), abs=1e-4)
    assert dets[0].header == color.header


def test_stale_or_invalid_depth_gives_no_3d_and_a_reason(rig, photos):
    color, _ = publish_scene(rig, photos['coffee'], depth_offset=0.5)  # beyond 20 ms
    assert wait_for(lambda: rig.newest_is('front', color.header))
    response = rig.call(task=Ground.Request.CAPTION)
    assert response.success and not response.detections_3d.detections
    cat = response.grounding.phrases[0]
    assert not cat.has_position and 'tolerance 20 ms' in cat.position_note
    color, _ = publish_scene(rig, photos['coffee'], offset=1.0, fill=np.nan)
    assert wait_for(lambda: rig.newest_is('front', color.header))
    response = rig.call(task=Ground.Request.CAPTION)
    cat = response.grounding.phrases[0]
    assert not cat.has_position and 'valid depth pixels' in cat.position_note
    explicit = rig.call(task=Ground.Request.CAPTION, image=rig.image(photos['rocket']))
    assert 'image sent with the request' in explicit.grounding.phrases[0].position_note


def test_continuous_3d_and_markers_only_with_a_subscriber(rig, photos, monkeypatch):
    """3D detections on every result; markers built and published only for a subscriber."""
    import kosmos_ros.node.camera as camera_module

    node = rig.node
    publisher = node._cameras['front'].outputs['markers']
    built, published = [], []
    build, publish = camera_module.markers_msg, publisher.publish

    def counting_build(*args, **kwargs):
        built.append(1)
        return build(*args, **kwargs)

    def counting_publish(msg):
        published.append(msg)
        return publish(msg)

    monkeypatch.setattr(camera_module, 'markers_msg', counting_build)
    monkeypatch.setattr(publisher, 'publish', counting_publish)
    node.set_parameters([Parameter('rate_hz', value=5.0)])
    assert publisher.get_subscription_count() == 0
    color, box = publish_scene(rig, photos['chelsea'])
    assert wait_for(lambda: rig.detections_3d['front'], 30)
    assert rig.detections_3d['front'][0].header == color.header
    # A second result without a subscriber: results come in order, so once it is here the
    # worker has passed the markers step of the first.
    second, _ = publish_scene(rig, photos['chelsea'], offset=0.5)
    assert wait_for(lambda: any(d.header == second.header for d in rig.detections_3d['front']),
                    30)
    assert (built, published) == ([], []), 'markers made without a subscriber'
    centres = [d.bbox.center.position for d in rig.detections_3d['front'][0].detections
               if d.results[0].hypothesis.class_id == 'a cat']
    assert (centres[0].x, centres[0].y, centres[0].z) == pytest.approx(
        expected_center(box, OBJECT), abs=1e-4)
    rig.client.create_subscription(MarkerArray, 'front/markers', rig.markers.append, 10)
    assert wait_for(lambda: publisher.get_subscription_count() > 0)
    color, _ = publish_scene(rig, photos['chelsea'], offset=1.0)
    assert wait_for(lambda: rig.markers, 30)
    cubes = [m for m in rig.markers[-1].markers if m.type == m.CUBE]
    assert cubes and cubes[0].header == color.header
    assert built and published  # the counters see the markers made for the subscriber


def test_an_idle_camera_drops_depth_too_and_its_next_query_has_3d(
        ros, tiny_model_dir, steer, photos):
    h = depth_harness(ros, tiny_model_dir, steer, unsubscribe_idle_after=1.0,
                      frame_wait_timeout=3.0)
    depth_pub, info_pub = h.depth_pubs['front'], h.info_pubs['front']
    rgb = photos['coffee']
    height, width = rgb.shape[:2]
    box = cat_box(width, height)
    depth = np.full((height, width), PLANE, np.float32)
    depth[int(box.y1):int(np.ceil(box.y2)), int(box.x1):int(np.ceil(box.x2))] = OBJECT
    stop, sent = threading.Event(), []

    def camera():  # colour, depth and info with one stamp, 10 times a second
        while not stop.wait(0.1):
            color = h.image(rgb)
            depth_msg = Image(height=height, width=width, encoding='32FC1', step=width * 4,
                              data=depth.tobytes())
            depth_msg.header = color.header
            info = CameraInfo(width=width, height=height,
                              k=[FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0])
            info.header = color.header
            info_pub.publish(info)
            depth_pub.publish(depth_msg)
            h.pubs['front'].publish(color)
            sent.append(color.header)

    thread = threading.Thread(target=camera, daemon=True)
    thread.start()
    counts = (h.pubs['front'].get_subscription_count, depth_pub.get_subscription_count,
              info_pub.get_subscription_count)
    try:
        # Ten frames sent with their depth and info (the camera's own events, not a sleep),
        # and no subscription made for them.
        assert wait_for(lambda: len(sent) >= 10, 10.0)
        assert [count() for count in counts] == [0, 0, 0]
        assert h.node._cameras['front'].intake.subscribed_count == 0
        response = h.call(task=Ground.Request.CAPTION)
        assert response.success, response.message
        assert [count() for count in counts] == [1, 1, 1]
        cat = response.grounding.phrases[0]
        assert cat.text == 'a cat' and cat.has_position, cat.position_note
        assert (cat.position.x, cat.position.y, cat.position.z) == pytest.approx(
            expected_center(box, OBJECT), abs=1e-4)
        assert response.detections_3d.header == response.grounding.header
        assert wait_for(lambda: [count() for count in counts] == [0, 0, 0], 5.0)
    finally:
        stop.set()
        thread.join(5.0)
        h.close()
