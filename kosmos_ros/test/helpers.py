# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Test helpers shared by several test modules."""

from pathlib import Path
import re
import shutil
import subprocess
import time

from transformers import LogitsProcessor

STEERED = ('<phrase> a cat</phrase><object><patch_index_0044><patch_index_0863></object> and'
           '<phrase> two cups</phrase><object><patch_index_0100><patch_index_0300>'
           '</delimiter_of_multi_objects/><patch_index_0520><patch_index_0990></object> on')


class Steer(LogitsProcessor):
    """Push generation along a target token sequence, then let the model continue.

    Stateless: at each step it finds how much of the target the row already ends with and
    favours the next target token, so it behaves the same in any pipeline and batch. The
    real generation, decoding and post-processing still run; only the choice is steered.
    """

    def __init__(self, target_ids):
        self.target = list(target_ids)

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        for b, row in enumerate(input_ids.tolist()):
            done = 0
            for m in range(min(len(self.target), len(row)), 0, -1):
                if row[-m:] == self.target[:m]:
                    done = m
                    break
            if done < len(self.target):
                scores[b, self.target[done]] += 1000.0
        return scores


def steer_for(tokenizer, text=STEERED):
    return Steer(tokenizer(text, add_special_tokens=False)['input_ids'])


def read_bag(path):
    """Return {topic: [(bag time, message), ...]} of a bag, deserialized by rosbags."""
    from pathlib import Path

    from rosbags.highlevel import AnyReader

    from kosmos_ros.bag.typestore import project_typestore
    out = {}
    with AnyReader([Path(path)], default_typestore=project_typestore()) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    return out


def stamp_of(msg):
    """Return (sec, nanosec, frame_id) of a message's header."""
    return (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)


def wait_for(predicate, timeout=20.0, period=0.01):
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


def lifecycle_state(client_node, node_name, timeout=10.0):
    """Return the lifecycle state label of ``node_name`` (GetState over DDS), '' if none."""
    from lifecycle_msgs.srv import GetState
    client = client_node.create_client(GetState, f'{node_name}/get_state')
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            return ''
        future = client.call_async(GetState.Request())
        if not wait_for(future.done, timeout):
            return ''
        return future.result().current_state.label
    finally:
        client_node.destroy_client(client)


def wait_for_state(client_node, node_name, label, timeout=60.0):
    """Wait until ``node_name`` reports lifecycle state ``label``; return the last label seen."""
    deadline = time.monotonic() + timeout
    seen = ''
    while time.monotonic() < deadline:
        seen = lifecycle_state(client_node, node_name, min(10.0, timeout))
        if seen == label:
            break
        time.sleep(0.2)
    return seen


def optional_module(name, why):
    """Import ``name``, or skip the test when it is not installed (``why`` says where it is).

    Only a missing module skips: an error raised while importing an installed one (a broken
    install, or this project's code it imports) fails the test instead of hiding as a skip.
    """
    import importlib
    import pytest
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        pytest.skip(f'{name} is not installed: {why}')


def small(photo, width=160, height=120):
    """Return ``photo`` resized to ``width`` x ``height`` (cheap frames for node tests)."""
    import cv2
    return cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)


def chromium():
    """Return the path of a Chromium (or Chrome) here, or None."""
    for name in ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'):
        path = shutil.which(name)
        if path:
            return path
    return None


def open_in_browser(page, tmp_path):
    """Load a page in headless Chromium; return the attributes its check script set.

    No network: every host is unresolvable and the proxy a dead loopback port.
    """
    return dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', dump_dom(page, tmp_path)[1]))


def dump_dom(page, tmp_path):
    """Load a page in headless Chromium (no network); return its DOM and its body's attributes.

    The DOM is the page as it stands after its scripts ran (``--dump-dom``): a script that
    changed the title shows there.
    """
    proc = subprocess.run(
        [chromium(), '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
         '--no-first-run', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--disable-default-apps', '--proxy-server=127.0.0.1:9',
         '--host-resolver-rules=MAP * ~NOTFOUND', f'--user-data-dir={tmp_path / "profile"}',
         '--virtual-time-budget=5000', '--dump-dom', Path(page).resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r'<body([^>]*)>', proc.stdout)
    assert body, proc.stdout[:2000]
    return proc.stdout, body.group(1)


# -- peak memory and live streams ---------------------------------------------------------------

CLEAR_REFS = Path('/proc/self/clear_refs')
_peak_probe = []  # the answer of peak_memory_unmeasurable(), once per process


def _status_mib(*fields):
    """Return the named memory figures of this process (VmRSS, VmHWM), in MiB, in one read."""
    values = {}
    for line in Path('/proc/self/status').read_text().splitlines():
        key, _, rest = line.partition(':')
        if key in fields:
            values[key] = int(rest.split()[0]) / 1024
    return tuple(values[f] for f in fields)


def peak_memory_unmeasurable():
    """Return why this process's peak memory cannot be measured here, or None if it can.

    The measure resets the peak (VmHWM) by writing 5 to /proc/self/clear_refs. It is tried
    once: a 64 MiB allocation is touched and freed, the peak reset, and the peak must then have
    dropped (a kernel may take the write and keep the peak).
    """
    if not _peak_probe:
        try:
            len(b'\x01' * (64 << 20))  # 64 MiB touched, then freed
            CLEAR_REFS.write_text('5')
            rss, hwm = _status_mib('VmRSS', 'VmHWM')
            _peak_probe.append(None if hwm - rss < 32 else
                               f'writing {CLEAR_REFS} left the peak at {hwm:.0f} MiB with '
                               f'{rss:.0f} MiB resident: the kernel did not reset it')
        except (OSError, KeyError, ValueError, IndexError) as exc:
            _peak_probe.append(f'cannot reset the peak memory through {CLEAR_REFS}: {exc}')
    return _peak_probe[0]


class PeakRise:
    """How far this process's peak resident memory rose inside a ``with`` block, in MiB.

    ``growth`` is None when it cannot be measured here (see :func:`peak_memory_unmeasurable`,
    whose reason is in ``why_not``): a caller must then fail or skip saying so, never pass.
    """

    def __enter__(self):
        self.why_not = peak_memory_unmeasurable()
        self.growth = None
        if self.why_not is None:
            CLEAR_REFS.write_text('5')
            self.start = _status_mib('VmRSS')[0]
        return self

    def __exit__(self, *exc):
        if self.why_not is None:
            self.growth = _status_mib('VmHWM')[0] - self.start
        return False

    def below(self, limit_mib, what):
        """Assert the rise stayed under ``limit_mib``; return False if it was not measured."""
        if self.growth is None:
            return False
        assert self.growth < limit_mib, \
            f'{what}: memory peaked {self.growth:.0f} MiB above its start'
        return True


def skip_unless_measured(measured, what):
    """Skip, with the reason, a test whose memory checks could not all be made.

    Call it last: everything else the test checks has passed by then, and says so.
    """
    import pytest
    if not all(measured):
        pytest.skip(f'{what}: peak memory not measured ({peak_memory_unmeasurable()}); '
                    'everything else was checked')


class Finaliser:
    """Sends its process SIGINT while it is finalised, as a signal landing in ``__del__`` does.

    Python drops an exception raised in a finaliser (it goes to ``sys.unraisablehook``): the
    KeyboardInterrupt of the signal handler is lost.
    """

    def __del__(self):
        import signal
        signal.raise_signal(signal.SIGINT)
