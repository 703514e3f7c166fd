"""The paper's research harness: the experiments behind its figures and tables.

* :mod:`auxdpo.harness.lab` — exact solvers on small enumerable problems (``auxdpo lab``)
* :mod:`auxdpo.harness.oracle` — oracle benchmarks on real transformers (``auxdpo oracle``,
  ``auxdpo oracle-grid``)
* :mod:`auxdpo.harness.protocol` — the evaluation protocol as one resumable command
  (``auxdpo protocol``)
* :mod:`auxdpo.harness.evaluation` — metrics, model scoring, tables and figures (``auxdpo eval``)

The harness builds on the library (:mod:`auxdpo.losses`, :mod:`auxdpo.offsets`,
:mod:`auxdpo.train`, :mod:`auxdpo.data` and the top-level helpers); library code never imports
the harness. Only the entry points (:mod:`auxdpo.cli`, :mod:`auxdpo.demo`) reach into it.
The import contracts in ``pyproject.toml`` (``[tool.importlinter]``) enforce both directions;
``tests/test_layout.py`` runs them.
"""
