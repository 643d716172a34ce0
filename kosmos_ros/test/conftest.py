# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: loopback-only DDS, offline Hugging Face, the tiny model, photographs.

Also the ``ros`` executor (with :func:`executor_alive`, which fails the test during which a
callback crashed it) and the reliability ledger. Support modules beside the tests:
``helpers`` (waits, steering, lifecycle state), ``node_harness`` (a node and a client over
DDS), ``hostile`` (bad inputs and injected faults) and ``ledger`` (the case table).
"""

import atexit
import os
from pathlib import Path
import random
import shutil
import tempfile
from typing import Any, NamedTuple

# Every DDS packet stays on loopback, each run in its own domain; nothing reaches a model hub.
# The range alone keeps DDS on loopback on Jazzy and Kilted (checked on the wire by
# test_environment.py::test_dds_stays_on_loopback); ROS_LOCALHOST_ONLY only adds warnings.
# Under pytest-xdist (make test runs -n auto) each worker takes a domain of its own, 1-101.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.pop('ROS_LOCALHOST_ONLY', None)
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
WORKER = os.environ.get('PYTEST_XDIST_WORKER')  # gw0, gw1, ... (None without xdist)
if WORKER:
    os.environ['ROS_DOMAIN_ID'] = str(
        1 + (int(os.environ['ROS_DOMAIN_ID']) + int(WORKER.removeprefix('gw'))) % 101)
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['TRANSFORMERS_VERBOSITY'] = 'error'
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

# The tests leave the home folder alone. They run with a fresh, empty HOME (their node
# processes too; xdist workers share the one of the run); at the end of the run,
# pytest_sessionfinish fails it if anything was written there, and names what. What the
# programs they start would keep in the home folder goes to the run's temp folder instead:
# ROS log files (~/.ros/log), caches and settings (XDG: Chromium's, the demo's tiny model).
if not WORKER:
    run_folder = tempfile.mkdtemp(prefix='kosmos_ros_test_run_')
    atexit.register(shutil.rmtree, run_folder, ignore_errors=True)
    for variable, name in (('HOME', 'home'), ('ROS_LOG_DIR', 'ros_log'),
                           ('XDG_CACHE_HOME', 'cache'), ('XDG_CONFIG_HOME', 'config'),
                           ('KOSMOS_ROS_LEDGER_DIR', 'ledger')):
        os.environ[variable] = os.path.join(run_folder, name)
        os.mkdir(os.environ[variable])
HOME = os.environ['HOME']
LEDGER_DIR = os.environ['KOSMOS_ROS_LEDGER_DIR']  # the reliability cases of every process

import pytest  # noqa: E402

# Test modules that use no ROS at all (no rclpy, no ROS message package, no node process):
# they pass or fail alike on every distro, so CI runs them once (on Jazzy), and Kilted runs
# the others, marked ``distro`` (pytest -m distro). test_packaging.py checks this list.
ROS_FREE = frozenset({
    'test_admission', 'test_bag_depth', 'test_bag_safety', 'test_bag_tracks', 'test_corpus',
    'test_corpus_cluster', 'test_corpus_folder', 'test_corpus_gate', 'test_corpus_leftovers',
    'test_corpus_ray', 'test_corpus_report', 'test_depth', 'test_engine', 'test_eval',
    'test_eval_bags', 'test_eval_benchmarks', 'test_eval_labels', 'test_eval_metrics',
    'test_eval_report', 'test_eval_run_index', 'test_images',
    'test_lint', 'test_loading', 'test_parsing', 'test_prompts', 'test_report_html',
    'test_tracking',
})


# The slowest modules (pytest --durations, summed by module), slowest first: make test runs
# them first, so that under xdist (whole modules per worker) none starts last and runs alone.
SLOWEST_FIRST = ('test_corpus', 'test_corpus_leftovers', 'test_node', 'test_corpus_cluster',
                 'test_corpus_ray', 'test_tracks_node', 'test_bag_safety', 'test_dds_writes',
                 'test_process', 'test_bags', 'test_follow_goals', 'test_engine',
                 'test_packaging', 'test_faults', 'test_faults_lifecycle')


def pytest_collection_modifyitems(config, items):
    """Mark every test of a module that uses ROS ``distro`` (see ROS_FREE); slowest first."""
    for item in items:
        if item.module.__name__ not in ROS_FREE:
            item.add_marker(pytest.mark.distro)
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))  # stable


def written_to_home():
    """Return the paths written into the tests' home folder (empty when it was left alone)."""
    return sorted(str(p.relative_to(HOME)) for p in Path(HOME).rglob('*'))


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a test wrote into the home folder, naming what it wrote.

    Checked once, by the process that made the folder (the xdist controller, when there is one).
    """
    written = [] if WORKER else written_to_home()
    if written:
        more = f' and {len(written) - 20} more' if len(written) > 20 else ''
        shown = ', '.join(written[:20]) + more
        session.config.get_terminal_writer().line(
            f'FAILED: the tests wrote into the home folder ({HOME}): {shown}', red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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


@pytest.fixture
def scene(photos):
    """Return the cat photograph at 320x240: what the tracking and follow tests stream."""
    from helpers import small
    return small(photos['chelsea'], 320, 240)


class Ros(NamedTuple):
    """The ``ros`` fixture: an rclpy context, its executor, and what callbacks raised."""

    context: Any
    executor: Any
    errors: list  # the exceptions callbacks raised out of the executor, in order


@pytest.fixture(scope='module')
def ros():
    """Start an rclpy context with a multi-threaded executor spinning in the background.

    It spins as the node's own executor does (:func:`kosmos_ros.node.spinning.spin`): an
    exception a callback raises is kept in ``errors`` and spinning goes on;
    :func:`executor_alive` fails the test during which it happened (a test that provokes one
    takes it out of ``errors``).
    """
    import threading

    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from kosmos_ros.node.spinning import spin

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    errors = []
    halt = threading.Event()
    thread = threading.Thread(target=spin, args=(executor, halt.is_set, errors.append),
                              name='executor', daemon=True)
    thread.start()
    yield Ros(context, executor, errors)
    halt.set()  # before the shutdown: once shut down, spin_once still hands out work
    thread.join(5.0)
    executor.shutdown(timeout_sec=5.0)
    rclpy.try_shutdown(context=context)


@pytest.fixture(autouse=True)
def executor_alive(request):
    """Fail the test during which a callback raised out of the ``ros`` fixture's executor."""
    if 'ros' not in request.fixturenames:
        yield
        return
    errors = request.getfixturevalue('ros').errors
    if errors:  # raised after the test before this one ended (it failed for earlier ones)
        late = errors[:]
        errors.clear()
        pytest.fail('a callback raised out of the executor after the previous test: '
                    + _traceback(late[0]))
    yield
    assert not errors, 'a callback raised out of the executor: ' + _traceback(errors[0])


def _traceback(exc):
    import traceback
    return ''.join(traceback.format_exception(exc))


@pytest.fixture(scope='session')
def ledger_book():
    """Collect the reliability cases of this process; hand them to the run's table at its end.

    Each process (each xdist worker) writes its rows into LEDGER_DIR; pytest_terminal_summary
    of the run's main process prints the table of them all.
    """
    from ledger import Ledger
    book = Ledger()
    yield book
    if book.rows:
        import json
        (Path(LEDGER_DIR) / f'{WORKER or "main"}.json').write_text(json.dumps(book.rows))


def pytest_terminal_summary(terminalreporter):
    """Print the reliability table of the run (every process's cases), once.

    ``KOSMOS_ROS_RELIABILITY_TABLE=path`` also writes it to ``path``.
    """
    import json
    from ledger import Ledger
    if WORKER:
        return
    book = Ledger()
    for part in sorted(Path(LEDGER_DIR).glob('*.json')):
        book.rows.extend(tuple(row) for row in json.loads(part.read_text()))
    if not book.rows:
        return
    book.rows.sort(key=lambda row: row[0])  # grouped by test module, each in its own order
    text = book.render()
    path = os.environ.get('KOSMOS_ROS_RELIABILITY_TABLE')
    if path:
        Path(path).write_text(text + '\n')
    for line in text.splitlines():
        terminalreporter.write_line(line)


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
