# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``kosmos_corpus``: ground a corpus of bags, search its index, compare two runs.

::

    kosmos_corpus ground BAGS... -o RUN [--workers N] [--ray-address ADDR] [ground_bag options]
    kosmos_corpus search RUN [--phrase P] [--text T] [--min-score S] [--topic GLOB] ...
    kosmos_corpus search --find "a forklift" --run FIND_RUN BAGS...
    kosmos_corpus compare RUN_A RUN_B [--html F] [--json F] [--max-added N] ...

Exit status: 0 done; 1 the model could not be loaded (ground, search --find) or a compare
threshold was exceeded; 2 an error (bad options, unusable run folder, unreadable index, a run
left incomplete by lost workers); 130 interrupted (the run resumes when given again).
"""

from __future__ import annotations

if __name__ == '__main__':  # a command: SIGINT and SIGTERM held while the modules import
    from kosmos_ros import early_signals
    early_signals.hold()

import argparse
import json
from pathlib import Path
import sys
from typing import Any, Sequence

from kosmos_ros.cli_options import exit_with
from kosmos_ros.corpus.arguments import parser, PROG
from kosmos_ros.errors import KosmosError, ModelLoadError
from kosmos_ros.threads import quiet_openmp


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status.

    SIGTERM (systemd, ``docker stop``, ``timeout``) is a Ctrl-C from the first instant: it
    raises SIGINT, which the run's SigintGuard, or this function, turns into exit 130. Both
    are held while the options are read and the command's modules load: a KeyboardInterrupt
    inside the import of numpy or pyarrow turns into an ImportError, or an exit by SIGINT
    (-2) after this function returned. After an interrupt both stay ignored until the
    process exits (no traceback on the way out); otherwise the SIGTERM handler is given back.
    """
    import signal
    import threading

    from kosmos_ros.corpus.ray_env import signals_held
    from kosmos_ros.early_signals import replay

    forward = threading.current_thread() is threading.main_thread() and \
        signal.getsignal(signal.SIGINT) is signal.default_int_handler and \
        signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if forward:
        signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    status = None
    try:
        try:
            with signals_held():
                replay()  # one that came while the modules imported (kosmos_ros.early_signals)
                args = parser().parse_args(argv)
                quiet_openmp()  # before torch loads
                import pyarrow.compute  # noqa: F401 (the C extensions the command loads)
                import pyarrow.parquet  # noqa: F401
                if args.command == 'ground' or getattr(args, 'find', None) is not None:
                    import kosmos_ros.corpus.run  # noqa: F401
                    import kosmos_ros.model.engine  # noqa: F401 (torch)
            if args.command == 'ground':
                status = _ground(args)
            elif args.command == 'search':
                status = _search(args)
            else:
                status = _compare(args)
        except KeyboardInterrupt:
            if forward:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            print(f'{PROG}: interrupted', file=sys.stderr)
            status = 130
        except ModelLoadError as exc:
            print(f'{PROG}: cannot load the model: {exc}', file=sys.stderr)
            status = 1
        except (KosmosError, ValueError, OSError) as exc:
            print(f'{PROG}: error: {exc}', file=sys.stderr)
            status = 2
    finally:  # status None: SystemExit (argparse) on its way
        if forward:
            signal.signal(signal.SIGINT, signal.SIG_IGN if status == 130 else
                          signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_IGN if status == 130 else signal.SIG_DFL)
    return status


def _workers(text: str) -> int | None:
    if str(text).strip().lower() == 'auto':
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f'--workers must be auto or a number; got {text!r}') from None
    if value < 0:
        raise ValueError(f'--workers must be 0 or more; got {value}')
    return value


def _inputs(args: argparse.Namespace, given: list[str]) -> tuple[str, ...]:
    from kosmos_ros.corpus.inputs import read_list

    inputs = list(given)
    for name in args.from_file:
        inputs += read_list(Path(name))
    return tuple(inputs)


def _corpus_options(args: argparse.Namespace, inputs: tuple[str, ...], output: Path, task: str,
                    prompt: str, label: str) -> Any:
    from kosmos_ros.cli_options import grounding_options
    from kosmos_ros.corpus.options import CorpusOptions

    args.task, args.prompt = task, prompt  # search --find: the find task for its phrase
    options = CorpusOptions.from_grounding(
        grounding_options(args), inputs=inputs, output=output,
        topics=tuple(getattr(args, 'topic', ())), copy_input=getattr(args, 'copy_input', False),
        depth_topics=tuple(args.depth_topic), camera_info_topics=tuple(args.camera_info_topic),
        use_depth=not args.no_depth, chunk_frames=args.chunk_frames,
        batch_size=args.batch_size, workers=_workers(args.workers),
        ray_address=args.ray_address, chunks_per_task=args.chunks_per_task, model_label=label)
    options.check()
    return options


def _spec(args: argparse.Namespace) -> Any:
    from kosmos_ros.cli_options import model_options
    from kosmos_ros.corpus.options import WorkerSpec
    from kosmos_ros.model.engine import EngineOptions

    options = EngineOptions(max_new_tokens=args.max_new_tokens, cpu_threads=args.cpu_threads)
    return WorkerSpec(model_options(args), options)


def _run(args: argparse.Namespace, options: Any) -> Any:
    from kosmos_ros.corpus.run import run_corpus
    from kosmos_ros.testing.tiny_model import TINY_LABEL

    from kosmos_ros.corpus.progress import Progress

    if args.tiny_model:
        print(f'{PROG}: using the {TINY_LABEL}', file=sys.stderr)
    progress = Progress('quiet' if args.quiet else args.progress,
                        label='TINY MODEL' if args.tiny_model else '')
    return run_corpus(options, _spec(args), progress=progress)


def _label(args: argparse.Namespace) -> str:
    from kosmos_ros.testing.tiny_model import TINY_LABEL

    return TINY_LABEL if args.tiny_model else ''


def _ground(args: argparse.Namespace) -> int:
    options = _corpus_options(args, _inputs(args, args.inputs), Path(args.output), args.task,
                              args.prompt, _label(args))
    summary = _run(args, options)
    print(summary.describe())
    if summary.interrupted:
        return 130
    if not summary.complete:
        print(f'{PROG}: error: the run is incomplete: {summary.count("pending")} bags are still '
              'to do (see above); run the same command again to resume', file=sys.stderr)
        return 2
    return 0


def _search(args: argparse.Namespace) -> int:
    from kosmos_ros.corpus.index import read_table
    from kosmos_ros.corpus.search import export, format_table, parse_time, search, SearchQuery

    phrase = args.phrase
    if args.find is not None:
        if not args.find.strip():
            raise ValueError('--find needs a phrase')
        if not args.run:
            raise ValueError('--find needs --run RUN: the run folder the found frames go to')
        if args.export:  # before anything is grounded; again below with the index's bags
            _check_outputs([('the search output', args.export)], [args.run],
                           given=_inputs(args, args.sources))
        options = _corpus_options(args, _inputs(args, args.sources), Path(args.run), 'find',
                                  args.find, _label(args))
        summary = _run(args, options)
        print(summary.describe(), file=sys.stderr)
        if summary.interrupted:
            return 130
        sources = [args.run]
        phrase = phrase if phrase is not None else ''
    else:
        sources = args.sources
        if not sources:
            raise ValueError('give a run folder or index to search (or --find with bags)')
    import pyarrow as pa

    table = pa.concat_tables([read_table(Path(s)) for s in sources])
    if args.export:
        _check_outputs([('the search output', args.export)], sources, table)
    query = SearchQuery(phrase=phrase, text=args.text, min_score=args.search_min_score,
                        topic=args.search_topic, bag=args.bag,
                        since=parse_time(args.since) if args.since else None,
                        until=parse_time(args.until) if args.until else None)
    hits = search(table, query)
    if args.export:
        export(hits, Path(args.export))
        print(f'{hits.num_rows} hits written to {args.export}')
    else:
        print(format_table(hits, max(0, args.limit)))
    return 0


def _check_outputs(outputs: list[tuple[str, str]], sources: list[str], *tables: Any,
                   given: Sequence[str] = ()) -> None:
    """Refuse output paths over anything the command reads (:mod:`.outputs`)."""
    from kosmos_ros.bag.safety import Place
    from kosmos_ros.corpus.inputs import find_bags
    from kosmos_ros.corpus.outputs import bag_places, check_outputs

    inputs = [Place('the input run or index', Path(s)) for s in sources]
    for table in tables:
        inputs += bag_places(table['bag'].unique().to_pylist())
    inputs += [Place('the input bag', p) for p in find_bags(given)[0]] if given else []
    check_outputs([Place(role, Path(path)) for role, path in outputs], inputs)


def _compare(args: argparse.Namespace) -> int:
    from kosmos_ros.corpus.compare import compare, CompareSettings
    from kosmos_ros.corpus.gate import Thresholds
    from kosmos_ros.corpus.index import read_table
    from kosmos_ros.corpus.provenance import read_run

    settings = CompareSettings(match_iou=args.match_iou, moved_iou=args.moved_iou,
                               score_tolerance=args.score_tolerance, top=args.top)
    thresholds = Thresholds(
        max_added=args.max_added, max_lost=args.max_lost, max_moved=args.max_moved,
        max_caption_changes=args.max_caption_changes, max_score_shift=args.max_score_shift,
        max_missing_frames=args.max_missing_frames, max_latency_ratio=args.max_latency_ratio,
        allow_incomplete=args.allow_incomplete, allow_empty=args.allow_empty)
    for name, value in vars(thresholds).items():
        if value is not None and not isinstance(value, bool) and not value >= 0:
            raise ValueError(f'--{name.replace("_", "-")} must be 0 or more; got {value}')
    tables = [read_table(Path(args.run_a)), read_table(Path(args.run_b))]
    outputs = [(role, path) for role, path in (('the JSON report', args.json),
                                               ('the HTML report', args.html)) if path]
    _check_outputs(outputs, [args.run_a, args.run_b], *tables)
    runs = (read_run(Path(args.run_a), tables[0]), read_run(Path(args.run_b), tables[1]))
    result = compare(*tables, settings, (args.run_a, args.run_b), runs)
    print(result.describe(thresholds))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result.record(thresholds), indent=1,
                                              allow_nan=False) + '\n')
        print(f'json report: {args.json}')
    if args.html:
        from kosmos_ros.corpus.report import write_html  # matplotlib: only for HTML

        written = write_html(result, thresholds, Path(args.html))
        print(f'html report: {args.html} ({written.changes} changes, {written.thumbnails} '
              f'thumbnails, {written.plots} plots)')
    failed = result.failed(thresholds)
    if failed:
        print(f'{PROG}: thresholds exceeded: {", ".join(failed)}', file=sys.stderr)
        return 1
    return 0


def entry() -> None:
    """Run :func:`main` as a command and exit with its status (:func:`exit_with`)."""
    exit_with(main)


if __name__ == '__main__':
    early_signals.release()
    entry()
