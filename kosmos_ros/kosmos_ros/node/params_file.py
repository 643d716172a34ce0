# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Write config/grounding.yaml from the parameter tables (``make params``).

``python -m kosmos_ros.node.params_file --write kosmos_ros/config/grounding.yaml`` writes it;
``--check`` tells whether the file is up to date.
"""

from __future__ import annotations

from typing import Any

from kosmos_ros.node.params import CAMERA_SPECS, Spec, SPECS

YAML_HEADER = '''\
# Parameters of the kosmos_grounding node (kosmos_ros), each with its default.
# [reload]: changes need a reload (cleanup, set, configure); others apply at runtime.
# Written from kosmos_ros/node/params.py by: python -m kosmos_ros.node.params_file --write FILE
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


def main(argv: list[str] | None = None) -> int:
    """Write (``--write FILE``) or check (``--check FILE``) the parameters file."""
    import argparse
    from pathlib import Path
    parser = argparse.ArgumentParser(prog='python -m kosmos_ros.node.params_file',
                                     description=main.__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--write', metavar='FILE', type=Path)
    group.add_argument('--check', metavar='FILE', type=Path)
    args = parser.parse_args(argv)
    text = render_yaml()
    if args.write:
        args.write.write_text(text)
        return 0
    if args.check.read_text() != text:
        print(f'{args.check} differs from the parameter tables; run: python -m '
              f'kosmos_ros.node.params_file --write {args.check}')
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
