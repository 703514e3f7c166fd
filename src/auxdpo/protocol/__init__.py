"""The paper's evaluation protocol (Sec. 7.2) as one resumable command.

* :mod:`auxdpo.protocol.recipe` — the YAML recipe (dataclasses), validation, the run grid
* :mod:`auxdpo.protocol.tasks` — train and held-out sets per data set × setting (ID / OOD)
* :mod:`auxdpo.protocol.runner` — the resumable loop (one atomic result file per run)
* :mod:`auxdpo.protocol.results` — Table 1, Table 2, Figures 4/5 analogs, CSV/JSON
* :mod:`auxdpo.protocol.smoke` — the ``smoke`` preset and its labelled synthetic RewardBench 2

Scoring a model on a held-out set and its metrics against the base live in
:mod:`auxdpo.evaluation.scoring` (shared with ``auxdpo eval``).

Submodules import torch/transformers only inside the functions that need them.
"""
