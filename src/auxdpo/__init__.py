"""auxdpo: preference optimization that fixes DPO's misspecification.

The library a TRL user imports: the loss core in :mod:`auxdpo.losses`, the TRL trainer in
:mod:`auxdpo.train`, AuxDPO's offsets δ in :mod:`auxdpo.offsets`, data loaders in
:mod:`auxdpo.data`. The paper's research harness (exact lab, oracle benchmarks, evaluation
protocol, ``auxdpo eval``) lives in :mod:`auxdpo.harness`, which the library never imports
(docs/architecture.md has the map). Importing the package is cheap: submodules load on use.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
