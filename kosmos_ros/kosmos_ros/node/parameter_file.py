# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Write config/grounding.yaml and the docs' parameter tables from the specs (``make params``).

``python -m kosmos_ros.node.parameter_file --write kosmos_ros/config/grounding.yaml`` writes the
params file; ``--markdown docs/node.md`` rewrites the markdown tables between the page's
``<!-- parameters:begin -->`` and ``<!-- parameters:end -->`` markers and keeps the text around
them. ``--check FILE`` tells whether the params file (and, with ``--markdown``, the page) is up
to date instead of writing.
"""

from __future__ import annotations

from typing import Any

from kosmos_ros.node.parameter_table import CAMERA_SPECS, Spec, SPECS

YAML_HEADER = '''\
# Parameters of the kosmos_grounding node (kosmos_ros), each with its default.
# [reload]: changes need a reload (cleanup, set, configure); others apply at runtime.
# Written from kosmos_ros/node/parameter_table.py by:
#   python -m kosmos_ros.node.parameter_file --write FILE
# grounding.launch.py passes this file (params_file:=...); a launch argument given on the
# command line (model:=..., rate_hz:=...) overrides the file, one that is not given does not.
'''


def _yaml_scalar(value: Any) -> str:
    import yaml
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[:-4].strip() if text.endswith('\n...') else text


def _yaml_entry(name: str, spec: Spec, indent: str) -> list[str]:
    lines = [f'{indent}# {spec.description}{" [reload]" if spec.reload else ""}']
    if spec.choices:
        lines.append(f'{indent}# One of: {", ".join(spec.choices)}.')
    elif spec.low is not None:
        lines.append(f'{indent}# Range: {spec.low:g} to {spec.high:g}.')
    lines.append(f'{indent}{name}: {_yaml_scalar(spec.default)}')
    return lines


def render_yaml() -> str:
    """Return config/grounding.yaml: every parameter with its default and description."""
    lines = YAML_HEADER.splitlines() + ['/**:', '  ros__parameters:']
    for name, spec in SPECS.items():
        lines += _yaml_entry(name, spec, '    ')
    lines.append('    # Per camera NAME listed in cameras:')
    lines.append('    camera:')
    for name, spec in CAMERA_SPECS.items():
        lines += _yaml_entry(name, spec, '      ')
    return '\n'.join(lines) + '\n'


MARKDOWN_BEGIN = '<!-- parameters:begin -->'
MARKDOWN_END = '<!-- parameters:end -->'
MARKDOWN_NOTE = ('<!-- Written from the specs of kosmos_ros.node.parameter_table by make params '
                 '(python -m kosmos_ros.node.parameter_file --markdown PAGE); edit the specs, '
                 'not this table. -->')
_MARKDOWN_HEADER = ('| parameter | default | range or choices | reload | description |\n'
                    '| --- | --- | --- | --- | --- |')


def _number(value: float) -> str:
    return f'{int(value)}' if float(value).is_integer() else f'{value:g}'


def _markdown_cell(text: str) -> str:
    return text.replace('|', '\\|').replace('\n', ' ')


def _markdown_row(name: str, spec: Spec) -> str:
    if spec.choices:
        limits = ', '.join(f'`{choice}`' for choice in spec.choices)
    elif spec.low is not None:
        limits = f'{_number(spec.low)} to {_number(spec.high)}'
    else:
        limits = ''
    cells = (f'`{name}`', f'`{_yaml_scalar(spec.default)}`', limits,
             'reload' if spec.reload else '', _markdown_cell(spec.description))
    return '| ' + ' | '.join(cells) + ' |'


def render_markdown() -> str:
    """Return the markdown parameter tables: the node's, then each camera's (``NAME.``)."""
    lines = [MARKDOWN_NOTE, '', _MARKDOWN_HEADER]
    lines += [_markdown_row(name, spec) for name, spec in SPECS.items()]
    lines += ['', 'Per camera `NAME` listed in `cameras`:', '', _MARKDOWN_HEADER]
    lines += [_markdown_row(f'NAME.{name}', spec) for name, spec in CAMERA_SPECS.items()]
    return '\n'.join(lines) + '\n'


def markdown_section(page: str) -> str:
    """Return what lies between the parameter markers of a page (ValueError without them)."""
    begin, end = page.find(MARKDOWN_BEGIN), page.find(MARKDOWN_END)
    if begin < 0 or end < begin:
        raise ValueError(f'no {MARKDOWN_BEGIN} ... {MARKDOWN_END} section')
    return page[begin + len(MARKDOWN_BEGIN):end].strip('\n') + '\n'


def with_markdown_section(page: str) -> str:
    """Return the page with the tables between its markers rewritten, the rest unchanged."""
    markdown_section(page)  # the markers are there, in order
    head, rest = page.split(MARKDOWN_BEGIN, 1)
    tail = rest.split(MARKDOWN_END, 1)[1]
    return f'{head}{MARKDOWN_BEGIN}\n{render_markdown()}\n{MARKDOWN_END}{tail}'  # ends the table


def main(argv: list[str] | None = None) -> int:
    """Write or check the params file (``--write``/``--check``) and the docs' tables."""
    import argparse
    from pathlib import Path
    parser = argparse.ArgumentParser(prog='python -m kosmos_ros.node.parameter_file',
                                     description=main.__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--write', metavar='FILE', type=Path, help='write the params file')
    group.add_argument('--check', metavar='FILE', type=Path,
                       help='check the params file (and the --markdown page) instead')
    parser.add_argument('--markdown', metavar='PAGE', type=Path,
                        help='rewrite the parameter tables between the markers of this page '
                        f'({MARKDOWN_BEGIN} ... {MARKDOWN_END})')
    args = parser.parse_args(argv)
    if not (args.write or args.check or args.markdown):
        parser.error('give --write FILE, --check FILE or --markdown PAGE')
    stale = []
    if args.write:
        args.write.write_text(render_yaml())
    if args.check and args.check.read_text() != render_yaml():
        stale.append(str(args.check))
    if args.markdown:
        page = args.markdown.read_text(encoding='utf-8')
        try:
            updated = with_markdown_section(page)
        except ValueError as error:
            parser.error(f'{args.markdown}: {error}')
        if args.check:
            if updated != page:
                stale.append(str(args.markdown))
        elif updated != page:
            args.markdown.write_text(updated, encoding='utf-8')
    if stale:
        print(f'{", ".join(stale)} differ(s) from the parameter tables; run: make params')
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
