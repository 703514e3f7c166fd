"""auxdpo: preference optimization that fixes DPO's misspecification.

The loss core lives in :mod:`auxdpo.losses`; the exact lab in :mod:`auxdpo.lab`; the TRL
trainer in :mod:`auxdpo.train`, AuxDPO's offsets δ in :mod:`auxdpo.offsets`; the oracle
benchmarks in :mod:`auxdpo.oracle`; metrics and ``auxdpo eval`` in :mod:`auxdpo.evaluation`
(docs/architecture.md has the map). Importing the package is cheap: submodules load on use.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
