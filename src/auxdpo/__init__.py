"""auxdpo: preference optimization that fixes DPO's misspecification.

The loss core lives in :mod:`auxdpo.losses`; the exact lab in :mod:`auxdpo.lab`; the TRL
trainer in :mod:`auxdpo.train`. Importing the package is cheap: submodules load on use.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
