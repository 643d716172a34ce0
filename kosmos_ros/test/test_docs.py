# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""README.md and docs/ say what the code does: parameters, links, examples, no history.

The parameter tables of docs/node.md are written from the specs by ``make params``
(:mod:`kosmos_ros.node.parameter_file`); these tests fail when the specs changed and the page was
not rewritten, when the docs name a parameter that does not exist, when a page is not linked
from README or a relative link leads nowhere, when a ``ros2 service call`` or ``ros2 action
send_goal`` payload does not fill its message, and when development history ("issue 17", "this
session") creeps into the docs. Names of topics, services and actions are checked on a running
node by test_readme_names.py.
"""

import importlib
from pathlib import Path
import re

import pytest
import yaml

from kosmos_ros.node.parameter_file import (main, MARKDOWN_BEGIN, MARKDOWN_END, markdown_section,
                                            render_markdown, with_markdown_section)
from kosmos_ros.node.parameter_table import CAMERA_SPECS, SPECS

pytestmark = pytest.mark.fast  # in make test-fast: no DDS, no model

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / 'README.md'
DOCS = ROOT / 'docs'
NODE_PAGE = DOCS / 'node.md'
INTERFACES = ROOT / 'kosmos_ros_interfaces'
LAUNCH_ARGUMENTS = {'namespace', 'params_file', 'image_topic', 'log_level'}
ROS_PARAMETERS = {'use_sim_time'}  # declared by rclpy itself
# Backticked names near the word "parameter" that are not parameters: packages, the node, the
# lifecycle's transitions and states, the pytest marker.
NOT_PARAMETERS = {'kosmos_ros', 'kosmos_ros_interfaces', 'kosmos_grounding', 'transformers',
                  'configure', 'activate', 'deactivate', 'cleanup', 'shutdown', 'configuring',
                  'activating', 'unconfigured', 'inactive', 'active', 'fast'}
HISTORY = re.compile(r'\bissues? ?#?\d+|\bsessions?\b|\bbefore (?:the|its|a) fix\b|'
                     r'\bthe previous code\b|\bthis (?:PR|pull request|change)\b', re.I)
FENCE = re.compile(r'^```.*?^```[ \t]*$', re.M | re.S)
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
BACKTICKED = re.compile(r'`([^`\n]+)`')
IDENTIFIER = re.compile(r'(NAME\.)?([a-z][a-z0-9]*(?:_[a-z0-9]+)*)(?::=? ?([^\s:.][^\s:]*))?')
SAYS_PARAMETER = re.compile(r'(?<!\d B )\bparameters?\b', re.I)  # not "1.66 B parameters"
TOPIC_ROW = re.compile(r'^\| `NAME/([a-z0-9_]+)` \|', re.M)
CLI_PAYLOAD = re.compile(r'ros2 (service call|action send_goal)(?: --\S+)* (\S+) (\S+) \\?\s*'
                         r'"([^"]*)"')


def doc_pages():
    return sorted(DOCS.glob('**/*.md'))


def all_pages():
    return [README, *doc_pages()]


def prose(text: str) -> str:
    """Return markdown without its fenced code blocks (kept as blank lines)."""
    return FENCE.sub(lambda m: '\n' * m.group(0).count('\n'), text)


def console_scripts() -> set:
    """Return the package's command names (setup.py console_scripts)."""
    setup = (ROOT / 'kosmos_ros' / 'setup.py').read_text()
    return set(re.findall(r"'([a-z_]+) = kosmos_ros\.", setup))


def interface_fields() -> set:
    """Return every field name of the project's messages, services and actions."""
    names = set()
    for path in INTERFACES.glob('*/*.*'):
        if path.suffix not in ('.msg', '.srv', '.action'):
            continue
        for line in path.read_text().splitlines():
            words = line.split('#', 1)[0].split()
            if len(words) >= 2 and '=' not in words[1]:
                names.add(words[1])
    return names


def units(text: str):
    """Yield the table rows, list items and sentences of a page's prose."""
    for block in re.split(r'\n\s*\n', prose(text)):
        lines = block.strip().splitlines()
        if lines and lines[0].startswith('|'):
            yield from lines
            continue
        items = re.split(r'\n(?=\s*(?:[-*]|\d+\.) )', block)
        for item in items:
            yield from re.split(r'(?<=[.;])\s+(?=[A-Z`*(])', ' '.join(item.split()))


def github_slugs(text: str) -> set:
    """Return the anchors GitHub gives the headings of a page."""
    slugs, seen = set(), {}
    for heading in re.findall(r'^#{1,6} +(.+?) *#*$', prose(text), re.M):
        slug = re.sub(r'[^\w\- ]', '', heading.lower()).replace(' ', '-')
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        slugs.add(slug if count == 0 else f'{slug}-{count}')
    return slugs


def test_parameter_tables_are_written_from_the_specs():
    page = NODE_PAGE.read_text(encoding='utf-8')
    assert markdown_section(page) == render_markdown(), 'run: make params'
    assert with_markdown_section(page) == page, 'run: make params'
    assert main(['--check', str(ROOT / 'kosmos_ros' / 'config' / 'grounding.yaml'),
                 '--markdown', str(NODE_PAGE)]) == 0, 'run: make params'


def test_parameter_tables_list_every_parameter_with_its_flags():
    table = render_markdown()
    for name, spec in SPECS.items():
        row = next(line for line in table.splitlines() if line.startswith(f'| `{name}` |'))
        assert ('| reload |' in row) == spec.reload, name
        for choice in spec.choices:
            assert f'`{choice}`' in row, (name, choice)
    for name in CAMERA_SPECS:
        assert f'| `NAME.{name}` |' in table, name


def test_markdown_section_keeps_the_text_around_it(tmp_path):
    page = f'# Title\n\nBefore.\n\n{MARKDOWN_BEGIN}\nstale\n{MARKDOWN_END}\n\nAfter.\n'
    written = with_markdown_section(page)
    assert written.startswith('# Title\n\nBefore.\n\n') and written.endswith('\n\nAfter.\n')
    assert markdown_section(written) == render_markdown()
    assert with_markdown_section(written) == written
    path = tmp_path / 'page.md'
    path.write_text(page)
    assert main(['--check', str(ROOT / 'kosmos_ros' / 'config' / 'grounding.yaml'),
                 '--markdown', str(path)]) == 1
    assert main(['--markdown', str(path)]) == 0 and path.read_text() == written
    with pytest.raises(ValueError, match='no <!-- parameters:begin --> .* section'):
        with_markdown_section('# A page without the markers\n')
    with pytest.raises(ValueError, match='no <!-- parameters:begin --> .* section'):
        markdown_section(f'{MARKDOWN_END}\n{MARKDOWN_BEGIN}\n')


def test_the_docs_name_only_parameters_that_exist():
    """Check backticked names set as parameters, or named where the text says 'parameter'."""
    topics = set(TOPIC_ROW.findall(NODE_PAGE.read_text(encoding='utf-8')))
    assert {'detections', 'tracks', 'track_states'} <= topics, topics
    known = (set(SPECS) | LAUNCH_ARGUMENTS | ROS_PARAMETERS | interface_fields() | topics |
             console_scripts() | NOT_PARAMETERS)
    wrong = []
    for page in all_pages():
        for unit in units(page.read_text(encoding='utf-8')):
            says_parameter = SAYS_PARAMETER.search(unit) is not None
            for code in BACKTICKED.findall(unit):
                match = IDENTIFIER.fullmatch(code.strip())
                if not match:
                    continue
                camera, name, value = match.groups()
                where = f'{page.relative_to(ROOT)}: `{code}` in "{unit[:80]}"'
                if camera:  # NAME.topic, NAME.depth_topic, ...: always a camera parameter
                    if name not in CAMERA_SPECS:
                        wrong.append(where)
                elif says_parameter or (value is not None and '_' in name):
                    if name not in known:  # set as name: value, or named as a parameter
                        wrong.append(where)
    assert not wrong, 'not node parameters: ' + '\n'.join(wrong)


def test_every_docs_page_is_linked_from_readme():
    readme = README.read_text(encoding='utf-8')
    targets = {link.split('#', 1)[0] for link in LINK.findall(prose(readme))}
    missing = [str(p.relative_to(ROOT)) for p in doc_pages()
               if str(p.relative_to(ROOT)) not in targets]
    assert not missing, f'docs pages README does not link: {missing}'


def test_readme_is_short():
    lines = README.read_text(encoding='utf-8').count('\n')
    assert lines <= 200, f'README.md has {lines} lines; move detail to docs/'


def test_relative_links_and_anchors_resolve():
    broken = []
    for page in all_pages():
        for target in LINK.findall(prose(page.read_text(encoding='utf-8'))):
            if re.match(r'[a-z]+:', target):
                continue
            path, _, anchor = target.partition('#')
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f'{page.relative_to(ROOT)}: {target}')
            elif anchor and dest.suffix == '.md' and \
                    anchor not in github_slugs(dest.read_text(encoding='utf-8')):
                broken.append(f'{page.relative_to(ROOT)}: {target} (no such heading)')
    assert not broken, f'links that lead nowhere: {broken}'


def test_no_development_history_in_the_docs():
    found = []
    for page in all_pages():
        for number, line in enumerate(page.read_text(encoding='utf-8').splitlines(), 1):
            for match in HISTORY.finditer(line):
                found.append(f'{page.relative_to(ROOT)}:{number}: {match.group(0)!r}')
    assert not found, ('write the docs as facts about the current behaviour; history goes in '
                       f'kosmos_ros/CHANGELOG.rst: {found}')


def test_python_examples_compile():
    for page in all_pages():
        blocks = re.findall(r'^```python\n(.*?)^```', page.read_text(encoding='utf-8'),
                            re.M | re.S)
        for index, code in enumerate(blocks):
            compile(code, f'{page.name} example {index + 1}', 'exec')


def _fill(message, values, where):
    """Set ``values`` (parsed YAML) on ``message`` as ros2 service call / send_goal does."""
    types = message.get_fields_and_field_types()
    for name, value in values.items():
        assert name in types, f'{where}: {type(message).__name__} has no field {name!r}'
        current = getattr(message, name)
        if isinstance(value, dict):
            _fill(current, value, where)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            element = types[name].split('<', 1)[1].split('>', 1)[0].split(',')[0]
            package, type_name = element.split('/')
            cls = getattr(importlib.import_module(f'{package}.msg'), type_name)
            items = []
            for item in value:
                items.append(cls())
                _fill(items[-1], item, where)
            setattr(message, name, items)
        else:
            if isinstance(current, float) and isinstance(value, int):
                value = float(value)
            setattr(message, name, value)


def test_cli_payloads_fill_their_messages():
    payloads = []
    for page in all_pages():
        text = page.read_text(encoding='utf-8').replace('\\\n', ' ')
        payloads += [(page.name, *m.groups()) for m in CLI_PAYLOAD.finditer(text)]
    assert any(kind == 'action send_goal' for _, kind, *_ in payloads), payloads
    for where, kind, _name, type_name, payload in payloads:
        package, interface, name = type_name.split('/')
        cls = getattr(importlib.import_module(f'{package}.{interface}'), name)
        message = cls.Request() if interface == 'srv' else cls.Goal()
        _fill(message, yaml.safe_load(payload), f'{where}: {type_name}')


@pytest.mark.filterwarnings('ignore:nodes.Node.traverse:DeprecationWarning')  # catkin_pkg
def test_changelog_follows_the_ros_convention():
    from catkin_pkg.changelog import get_changelog_from_path
    from catkin_pkg.package import parse_package
    package = ROOT / 'kosmos_ros'
    changelog = get_changelog_from_path(str(package / 'CHANGELOG.rst'), 'kosmos_ros')
    assert changelog is not None, 'kosmos_ros/CHANGELOG.rst is missing'
    versions = [version for version, _, _ in changelog.foreach_version()]
    assert parse_package(str(package)).version in versions, versions
    text = (package / 'CHANGELOG.rst').read_text(encoding='utf-8')
    assert text.splitlines()[1] == 'Changelog for package kosmos_ros'


def test_the_topic_table_lists_every_output_and_only_those():
    """docs/node.md's `NAME/...` output rows are the outputs table, in its order and types."""
    from kosmos_ros.bag.typestore import project_typestore
    from kosmos_ros.messages import OUTPUTS

    text = (ROOT / 'docs' / 'node.md').read_text(encoding='utf-8')
    rows = re.findall(r'^\| `NAME/([a-z_0-9]+)` \| `([^`]+)`[^|]*\| out \|', text, re.M)
    assert [name for name, _ in rows] == [o.name for o in OUTPUTS], 'run: update docs/node.md'
    for (name, documented), out in zip(rows, OUTPUTS):
        assert documented == out.type_name.replace('/msg/', '/'), name
    store = project_typestore()
    assert all(o.type_name in store.fielddefs for o in OUTPUTS if o.offline)
