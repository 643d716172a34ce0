# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: loopback-only DDS, offline Hugging Face, the tiny model, photographs.

Also the ``ros`` executor (with :func:`executor_alive`, which fails the test during which a
callback crashed it) and the reliability ledger. Support modules beside the tests:
``helpers`` (waits, steering, lifecycle state), ``node_harness`` (a node and a client over
DDS), ``hostile`` (bad inputs and injected faults) and ``ledger`` (the case table).
"""

import os
import random
from typing import Any, NamedTuple

# Every DDS packet stays on loopback, each run in its own domain; nothing reaches a model hub.
# The range alone keeps DDS on loopback on Jazzy and Kilted (checked on the wire by
# test_environment.py::test_dds_stays_on_loopback); ROS_LOCALHOST_ONLY only adds warnings.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.pop('ROS_LOCALHOST_ONLY', None)
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['TRANSFORMERS_VERBOSITY'] = 'error'
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

import pytest  # noqa: E402


@pytest.fixture(scope='session')
def tiny_model_dir(tmp_path_factory):
    """Build a tiny random KOSMOS-2 with the real tokenizer (save_pretrained)."""
    from kosmos_ros.testing.tiny_model import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp('tiny_kosmos2'))


@pytest.fixture(scope='session')
def model_options(tiny_model_dir):
    from kosmos_ros.model.loading import ModelOptions
    return ModelOptions(model=str(tiny_model_dir), local_files_only=True, device='cpu')


@pytest.fixture(scope='session')
def engine(model_options):
    """Load the engine on the tiny model through the code users run."""
    from kosmos_ros.model.engine import EngineOptions, GroundingEngine
    return GroundingEngine.load(model_options, EngineOptions(max_new_tokens=24))


@pytest.fixture(scope='session')
def reference(tiny_model_dir):
    """Load the reference pipeline of the model card (AutoProcessor, AutoModel...)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    processor = AutoProcessor.from_pretrained(tiny_model_dir, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, local_files_only=True)
    return processor, model.eval()


@pytest.fixture(scope='session')
def photos():
    """Return real photographs shipped with scikit-image, as RGB uint8 arrays."""
    from kosmos_ros.testing.samples import load_photo, PHOTO_NAMES
    return {name: load_photo(name) for name in PHOTO_NAMES}


class Ros(NamedTuple):
    """The ``ros`` fixture: an rclpy context, its executor, and what stopped the executor."""

    context: Any
    executor: Any
    crashed: list  # the exception a callback raised out of the executor, if any


@pytest.fixture(scope='module')
def ros():
    """Start an rclpy context with a multi-threaded executor spinning in the background.

    A callback that raises stops the executor, and every later test of the module would hang
    waiting for answers: the exception is kept in ``crashed`` and :func:`executor_alive` fails
    the test during which it happened.
    """
    import threading

    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    crashed = []

    def spin():
        try:
            executor.spin()
        except BaseException as exc:  # a callback raised
            crashed.append(exc)
            raise

    thread = threading.Thread(target=spin, name='executor', daemon=True)
    thread.start()
    yield Ros(context, executor, crashed)
    executor.shutdown(timeout_sec=5.0)
    rclpy.try_shutdown(context=context)


@pytest.fixture(autouse=True)
def executor_alive(request):
    """Fail the test during which a callback raised out of the ``ros`` fixture's executor."""
    if 'ros' not in request.fixturenames:
        yield
        return
    crashed = request.getfixturevalue('ros').crashed
    if crashed:
        pytest.fail(f'the executor stopped spinning in an earlier test: {crashed[0]!r}')
    yield
    assert not crashed, f'the executor stopped spinning: {crashed[0]!r}'


@pytest.fixture(scope='session')
def ledger_book(request):
    """Collect the reliability cases of the session; print (and write) the table at its end.

    ``KOSMOS_ROS_RELIABILITY_TABLE=path`` also writes the table to ``path``.
    """
    from ledger import Ledger
    book = Ledger()
    yield book
    if not book.rows:
        return
    text = book.render()
    path = os.environ.get('KOSMOS_ROS_RELIABILITY_TABLE')
    if path:
        from pathlib import Path
        Path(path).write_text(text + '\n')
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin('terminalreporter'), plugins.getplugin('capturemanager')
    if reporter is None or capture is None:
        print(text)
        return
    with capture.global_and_fixture_disabled():
        for line in text.splitlines():
            reporter.write_line(line)


@pytest.fixture
def ledger(ledger_book, request):
    """Record a reliability case: ``ledger.add(interface, case, outcome, detail)``."""
    return ledger_book.page(request.path.name)


@pytest.fixture(scope='module')
def steer(engine):
    """Return a logits processor steering generation into phrases with known boxes."""
    from helpers import steer_for
    return steer_for(engine.tokenizer)


@pytest.fixture(scope='module')
def steered(engine, steer):
    """Return the engine steered to 'a cat' (one box) and 'two cups' (two boxes), 24 tokens."""
    return engine.with_options(logits_processors=(steer,), max_new_tokens=24)


@pytest.fixture(scope='module')
def quick(engine):
    """Return the engine with 4-token generations (pipeline checks)."""
    return engine.with_options(max_new_tokens=4)
