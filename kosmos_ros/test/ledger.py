# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The table of reliability cases: every hostile input or fault tried, and its outcome.

The reliability suites (test_bad_inputs.py, test_faults.py, test_faults_lifecycle.py,
test_security.py) record each case through the ``ledger`` fixture (conftest.py); the table and
its counts are printed at the end of the run (every xdist worker's cases), and written to
``KOSMOS_ROS_RELIABILITY_TABLE`` when that is set.
"""

import collections

OUTCOMES = ('refused', 'handled', 'refused by rclpy', 'survived')


class Ledger:
    """Every case tried and its outcome, with the test module that tried it."""

    def __init__(self):
        self.rows = []  # (module, interface, case, outcome, detail)

    def add(self, module, interface, case, outcome, detail=''):
        assert outcome in OUTCOMES, outcome
        detail = ' '.join(str(detail).split())
        self.rows.append((module, interface, case, outcome, detail[:80]))

    def page(self, module):
        """Return what a test of ``module`` records its cases with."""
        return Page(self, module)

    def render(self):
        modules = ', '.join(dict.fromkeys(r[0] for r in self.rows))
        lines = ['', f'reliability cases ({modules}): interface | case | outcome | detail']
        for row in self.rows:
            lines.append(' | '.join(row[1:]))
        by_outcome = collections.Counter(r[3] for r in self.rows)
        by_interface = collections.Counter(r[1] for r in self.rows)
        lines.append(f'total {len(self.rows)} cases; ' + ', '.join(
            f'{k} {v}' for k, v in sorted(by_outcome.items())))
        lines.append('by interface: ' + ', '.join(
            f'{k} {v}' for k, v in sorted(by_interface.items())))
        return '\n'.join(lines)


class Page:
    """One test module's view of the ledger: ``add(interface, case, outcome, detail)``."""

    def __init__(self, ledger, module):
        self._ledger, self._module = ledger, module

    def add(self, interface, case, outcome, detail=''):
        self._ledger.add(self._module, interface, case, outcome, detail)
