# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The article's benchmarks and the HTML report on the command line (``kosmos_eval``).

::

    kosmos_eval flickr30k ANNOTATIONS [--images DIR] [--split test] [--limit N] -o OUT
    kosmos_eval refcoco DATA [--dataset refcocog] [--images DIR] --split test -o OUT
    kosmos_eval article --flickr30k DIR --refcoco DIR [--coco-images DIR] -o OUT
    kosmos_eval report OUT/eval.json -o report.html

``flickr30k`` and ``refcoco`` write ``OUT/benchmark.json`` (the figures) and
``OUT/rows.jsonl`` (every phrase or expression, its boxes and whether it hit); ``article``
runs every split the article reports, one folder each, after checking that all the data is
there, and writes ``OUT/article.json`` beside them. Nothing is downloaded: the data are
folders given, the weights those of ``--model`` (with ``--local-files-only``, the local cache
alone). Exit status: 0 done; 1 the model could not be loaded; 2 an error (bad options,
missing or unusable data); 130 interrupted.

:func:`add_benchmark_commands` adds the commands to another parser; each sets ``run``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
from typing import Any, Callable, Sequence

from kosmos_ros.errors import KosmosError, ModelLoadError

PROG = 'kosmos_eval'
# The splits the article reports (github.com/microsoft/unilm kosmos-2/README.md).
ARTICLE_SPLITS = (('flickr30k', None, 'test'), ('flickr30k', None, 'val'),
                  ('refcoco', 'refcoco', 'val'), ('refcoco', 'refcoco', 'testA'),
                  ('refcoco', 'refcoco', 'testB'), ('refcoco', 'refcoco+', 'val'),
                  ('refcoco', 'refcoco+', 'testA'), ('refcoco', 'refcoco+', 'testB'),
                  ('refcoco', 'refcocog', 'val'), ('refcoco', 'refcocog', 'test'))
_HUB_FOLDERS = {'refcoco': 'RefCOCO', 'refcoco+': 'RefCOCOplus', 'refcocog': 'RefCOCOg'}


def _engine_arguments(parser: argparse.ArgumentParser) -> None:
    from kosmos_ros.cli_options import add_model_arguments

    add_model_arguments(parser)
    group = parser.add_argument_group('generation')
    group.add_argument('--max-new-tokens', type=int, default=32,
                       help='tokens generated per query (default: 32; the first box needs 4)')
    group.add_argument('--batch-size', type=int, default=8,
                       help='queries of one image decoded together (default: 8)')
    group.add_argument('--no-repeat-ngram', type=int, default=3,
                       help='forbid repeating n-grams of this size, 0: off (default: 3, as '
                            'the article generates)')
    parser.add_argument('--limit', type=int, help='ground at most this many samples')
    parser.add_argument('-o', '--output', required=True, help='output folder')
    parser.add_argument('--quiet', action='store_true', help='no progress lines')


def add_benchmark_commands(subparsers: Any) -> None:
    """Add ``flickr30k``, ``refcoco``, ``article`` and ``report`` to a subparsers object."""
    flickr = subparsers.add_parser(
        'flickr30k', help='phrase grounding on Flickr30k Entities (recall@1)',
        description='Ground every boxed phrase of a Flickr30k Entities split; recall@1 at '
                    'IoU 0.5 as the KOSMOS-2 article measures it.')
    flickr.add_argument('annotations', help='the Flickr30k Entities folder (Sentences/, '
                                            'Annotations/, test.txt, ...)')
    flickr.add_argument('--images',
                        help='the Flickr30k images (default: ANNOTATIONS/flickr30k-images)')
    flickr.add_argument('--split', default='test', choices=('train', 'val', 'test'))
    _engine_arguments(flickr)
    flickr.set_defaults(run=_flickr30k)

    refcoco = subparsers.add_parser(
        'refcoco', help='referring expressions on RefCOCO, RefCOCO+, RefCOCOg (accuracy@0.5)',
        description='Ground every referring expression of a split; accuracy at IoU 0.5 of '
                    'the first box, as the KOSMOS-2 article measures it. Pickles (refs(*).p) '
                    'are refused: give a Parquet or JSON conversion.')
    refcoco.add_argument('data', help='a Parquet, JSON or JSON-lines file, or a folder of them')
    refcoco.add_argument('--dataset', help='refcoco, refcoco+ or refcocog (default: from '
                                           'the path or the file)')
    refcoco.add_argument('--images', help='the COCO train2014 images (files that do not '
                                          'embed them)')
    refcoco.add_argument('--split', required=True, help='val, testA, testB or test')
    _engine_arguments(refcoco)
    refcoco.set_defaults(run=_refcoco)

    article = subparsers.add_parser(
        'article', help="every split of the article's grounding tables",
        description='Run Flickr30k Entities (val, test) and RefCOCO, RefCOCO+, RefCOCOg (all '
                    'their evaluation splits); all the data is checked before the model loads.')
    article.add_argument('--flickr30k', required=True, help='the Flickr30k Entities folder')
    article.add_argument('--flickr30k-images', help='default: FLICKR30K/flickr30k-images')
    article.add_argument('--refcoco', required=True,
                         help='a folder holding RefCOCO/, RefCOCOplus/ and RefCOCOg/ (lmms-lab '
                              'Parquet) or the finetune_*.json files of MDETR')
    article.add_argument('--coco-images', help='the COCO images (MDETR JSON)')
    _engine_arguments(article)
    article.set_defaults(run=_article)

    report = subparsers.add_parser(
        'report', help='an HTML report of an eval.json',
        description='Write one self-contained HTML page (plots, tables, thumbnails) of an '
                    'eval.json, and the data of every figure beside it (.figures.json).')
    report.add_argument('result', help='the eval.json of a kosmos_eval coco run')
    report.add_argument('-o', '--output', required=True, help='the HTML file to write')
    report.set_defaults(run=_report)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    add_benchmark_commands(top.add_subparsers(dest='command', required=True))
    return top


def main(argv: Sequence[str] | None = None) -> int:
    from kosmos_ros.cli_options import Interrupts

    args = parser().parse_args(argv)
    with Interrupts() as interrupts:
        return run_command(args, interrupts.check)


def run_command(args: argparse.Namespace, check_interrupt: Callable[..., None]) -> int:
    """Run a parsed command; print errors; return the exit status.

    ``check_interrupt`` raises KeyboardInterrupt if a signal came (:class:`Interrupts`): called
    after every image and before anything is written.
    """
    args.check_interrupt = check_interrupt
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f'{PROG}: interrupted', file=sys.stderr)
        return 130
    except ModelLoadError as exc:
        print(f'{PROG}: cannot load the model: {exc}', file=sys.stderr)
        return 1
    except (KosmosError, ValueError, OSError) as exc:
        print(f'{PROG}: error: {exc}', file=sys.stderr)
        return 2


def _engine(args: argparse.Namespace) -> Any:
    from kosmos_ros.cli_options import model_options
    from kosmos_ros.model.engine import EngineOptions, GroundingEngine
    from kosmos_ros.testing.tiny_model import TINY_LABEL

    for name in ('max_new_tokens', 'batch_size'):
        if getattr(args, name) < 1:
            raise ValueError(f'--{name.replace("_", "-")} must be at least 1')
    if args.no_repeat_ngram < 0:
        raise ValueError('--no-repeat-ngram must be 0 or more')
    if args.tiny_model:
        print(f'{PROG}: using the {TINY_LABEL}', file=sys.stderr)
    options = EngineOptions(max_new_tokens=args.max_new_tokens, max_batch_size=args.batch_size,
                            no_repeat_ngram_size=args.no_repeat_ngram,
                            cpu_threads=args.cpu_threads)
    return GroundingEngine.load(model_options(args), options)


def _progress(args: argparse.Namespace, what: str) -> Any:
    """Return the per-image callback: a signal that came ends the run; a line every 50."""
    def show(images: int, samples: int) -> None:
        args.check_interrupt()
        if not args.quiet and images % 50 == 0:
            print(f'{PROG}: {what}: {images} images, {samples} samples grounded',
                  file=sys.stderr)
    return show


def _flickr_samples(folder: str, images: str | None, split: str, limit: int | None) -> Any:
    from kosmos_ros.evaluation.flickr30k import Flickr30kEntities

    data = Flickr30kEntities(Path(folder), Path(images) if images else None)
    data.split_ids(split)  # the split file exists and reads
    return data, data.samples(split, limit)


def _refcoco_data(path: str, dataset: str | None, images: str | None, split: str) -> Any:
    from kosmos_ros.evaluation.refcoco import RefCoco

    return RefCoco(Path(path), split, dataset, Path(images) if images else None)


def _labelled(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    """Return the result with the tiny model named as such in its ``model``."""
    from kosmos_ros.testing.tiny_model import TINY_LABEL

    if args.tiny_model:
        result['model'] = f'{TINY_LABEL}: {result["model"]}'
    return result


def _finish(args: argparse.Namespace, result: dict[str, Any], out: Path) -> int:
    from kosmos_ros.evaluation.benchmarks import write_benchmark

    args.check_interrupt()
    path = write_benchmark(_labelled(args, result), out)
    print(summary_line(result, args.tiny_model))
    print(f'{PROG}: wrote {path} and {path.with_name("rows.jsonl")}')
    return 0


def summary_line(result: dict[str, Any], tiny: bool = False) -> str:
    """One line of a benchmark's figure, its count, the article's and what was skipped."""
    metric = result['metric']
    overall = result['overall']
    value = overall.get(metric)
    count = overall.get('phrases', overall.get('expressions', 0))
    shown = 'none' if value is None else f'{100 * value:.2f}'
    article = result['article']['value']
    line = (f'{result["dataset"]} {result["split"]}: {metric} {shown} % of {count} '
            f'{"phrases" if "phrases" in overall else "expressions"}')
    if article is not None:
        line += f' (article: {100 * article:.2f} %)'
    skipped = result['skipped']
    if skipped:
        line += '; skipped: ' + ', '.join(f'{n} {why}' for why, n in skipped.items())
    return line + (' [TINY RANDOM TEST MODEL]' if tiny else '')


def _flickr30k(args: argparse.Namespace) -> int:
    from kosmos_ros.evaluation.benchmarks import run_benchmark

    data, samples = _flickr_samples(args.annotations, args.images, args.split, args.limit)
    engine = _engine(args)
    result = run_benchmark('flickr30k', samples, engine, split=args.split,
                           progress=_progress(args, f'flickr30k {args.split}'),
                           skipped=data.skipped)
    return _finish(args, result, Path(args.output))


def _refcoco(args: argparse.Namespace) -> int:
    from kosmos_ros.evaluation.benchmarks import run_benchmark

    data = _refcoco_data(args.data, args.dataset, args.images, args.split)
    engine = _engine(args)
    result = run_benchmark('refcoco', data.samples(args.limit), engine, split=args.split,
                           dataset=data.dataset, skipped=data.skipped,
                           progress=_progress(args, f'{data.dataset} {args.split}'))
    return _finish(args, result, Path(args.output))


def _article_data(args: argparse.Namespace, kind: str, dataset: str | None, split: str) -> Any:
    """Return the reader of one split of the article's runs (EvaluationError if absent)."""
    if kind == 'flickr30k':
        return _flickr_samples(args.flickr30k, args.flickr30k_images, split, None)[0]
    root = Path(args.refcoco)
    hub = next((p for p in root.iterdir() if p.is_dir() and
                p.name.lower() == _HUB_FOLDERS[dataset].lower()), None) \
        if root.is_dir() else None
    return _refcoco_data(str(hub or root), dataset, args.coco_images, split)


def _first_image(data: Any, split: str) -> str | None:
    """Return the image file the first sample names when it is not there, else None."""
    samples = data.samples(split) if hasattr(data, 'split_ids') else data.samples()
    first = next(iter(samples), None)
    if first is None or getattr(first, 'image_bytes', None) or first.image.is_file():
        return None
    return str(first.image)


def _article_sources(args: argparse.Namespace) -> tuple[list[tuple[str, Any, str]], list[str]]:
    """Return the runs of the article (name, data, split) and what is missing."""
    runs, missing = [], []
    for kind, dataset, split in ARTICLE_SPLITS:
        name = f'{dataset or kind}-{split}'
        try:
            absent = _first_image(_article_data(args, kind, dataset, split), split)
            if absent:
                missing.append(f'{name}: no image {absent} (give the images folder)')
                continue
            runs.append((name, _article_data(args, kind, dataset, split), split))
        except (KosmosError, OSError) as exc:
            missing.append(f'{name}: {exc}')
    return runs, missing


def _article(args: argparse.Namespace) -> int:
    from kosmos_ros.evaluation import EvaluationError
    from kosmos_ros.evaluation.benchmarks import run_benchmark, write_benchmark

    runs, missing = _article_sources(args)
    if missing:
        raise EvaluationError('the data of the article is not all here (nothing is '
                              'downloaded):\n  '
                              + '\n  '.join(missing))
    engine = _engine(args)
    out, table = Path(args.output), []
    for name, data, split in runs:
        if hasattr(data, 'split_ids'):
            samples, kind, dataset = data.samples(split, args.limit), 'flickr30k', None
        else:
            samples, kind, dataset = data.samples(args.limit), 'refcoco', data.dataset
        result = run_benchmark(kind, samples, engine, split=split, dataset=dataset,
                               skipped=data.skipped, progress=_progress(args, name))
        args.check_interrupt()
        write_benchmark(_labelled(args, result), out / name)
        print(summary_line(result, args.tiny_model))
        table.append({k: result[k] for k in ('benchmark', 'dataset', 'split', 'metric',
                                             'overall', 'article', 'skipped', 'model')})
    path = out / 'article.json'
    args.check_interrupt()
    path.write_text(json.dumps(table, indent=1, allow_nan=False) + '\n', encoding='utf-8')
    print(f'{PROG}: wrote {path}')
    return 0


def _report(args: argparse.Namespace) -> int:
    from kosmos_ros.evaluation import EvaluationError
    from kosmos_ros.evaluation.report import write_report

    source = Path(args.result)
    html = Path(args.output)
    figures = html.with_suffix('.figures.json')
    _check_report_outputs(source, html, figures)
    try:
        result = json.loads(source.read_text(encoding='utf-8'))
    except FileNotFoundError:
        raise EvaluationError(f'{source}: no such file') from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f'{source}: not JSON: {exc}') from None
    args.check_interrupt()
    write_report(result, html)
    print(f'{PROG}: wrote {html} and {figures}')
    return 0


def _check_report_outputs(source: Path, html: Path, figures: Path) -> None:
    """Refuse a report path that is the eval.json it reads (or would write over it)."""
    from kosmos_ros.bag import BagError
    from kosmos_ros.bag.safety import check_apart, Place
    from kosmos_ros.evaluation import EvaluationError

    if html.suffix == '.json':
        raise EvaluationError(f'{html}: name the report .html (its figures go beside it, in '
                              f'{figures.name})')
    try:
        for place in (Place('the report', html), Place('the report figures', figures)):
            check_apart(place, [Place('the evaluation', source)],
                        '; outputs never replace what the command reads: choose another -o')
    except BagError as exc:
        raise EvaluationError(str(exc)) from None


if __name__ == '__main__':
    sys.exit(main())
