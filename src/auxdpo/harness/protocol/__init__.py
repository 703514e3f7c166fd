"""The paper's evaluation protocol (Sec. 7.2) as one resumable command.

* :mod:`auxdpo.harness.protocol.recipe` — the YAML recipe (dataclasses), validation, the run grid
* :mod:`auxdpo.harness.protocol.tasks` — train and held-out sets per data set × setting (ID / OOD)
* :mod:`auxdpo.harness.protocol.runner` — the resumable loop (one atomic result file per run)
* :mod:`auxdpo.harness.protocol.results` — Table 1, Table 2, Figures 4/5 analogs, CSV/JSON
* :mod:`auxdpo.harness.protocol.smoke` — the ``smoke`` preset and its labelled synthetic RewardBench 2

Scoring a model on a held-out set and its metrics against the base live in
:mod:`auxdpo.harness.evaluation.scoring` (shared with ``auxdpo eval``).

Submodules import torch/transformers only inside the functions that need them.
"""
