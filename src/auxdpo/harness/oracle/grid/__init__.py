"""``auxdpo oracle-grid``: the oracle benchmark's full grid, resumable cell by cell.

* :mod:`auxdpo.harness.oracle.grid.cells` — the cells (``GRID``) and where each stands in a folder
* :mod:`auxdpo.harness.oracle.grid.run` — run, resume or skip every selected cell
* :mod:`auxdpo.harness.oracle.grid.report` — ``grid.md``, ``grid.json``, the capacity figure
* :mod:`auxdpo.harness.oracle.grid.cli` — the command, ``--list`` and its equivalent commands

See docs/oracle.md, "The full grid".
"""
