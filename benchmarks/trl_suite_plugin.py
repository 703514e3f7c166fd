"""pytest plugin for ``benchmarks/trl_suite.py``: runs TRL's DPO tests against AuxDPOTrainer.

Loaded with ``-p trl_suite_plugin``. The environment variable ``AUXDPO_TRL_SUITE_METHOD``
picks the run: unset or empty leaves the tests with TRL's own ``DPOTrainer`` (on a machine
without a bf16-capable accelerator TRL's ``DPOConfig`` turns bf16 on and refuses to be built,
so there, and only where a test leaves ``bf16`` and ``fp16`` unset, it is given
``bf16=False``: :func:`machine_config`);
``dpo``, ``auxdpo`` (or any other method of ``AuxDPOConfig``) replace, in every collected
test module, the names ``DPOTrainer`` and ``DPOConfig`` that the module imported from TRL by
:class:`SuiteTrainer` and :func:`suite_config`, which build ``AuxDPOTrainer`` and
``AuxDPOConfig`` with that method. The test files themselves are not changed.

The substitution follows what a TRL user switching to auxdpo writes: ``method`` is the run's
method, except that in the ``dpo`` run a config that names a TRL ``loss_type`` trains that
loss (``method`` from ``loss_type``, as ``AuxDPOTrainer`` does with a plain ``DPOConfig``).
"""

from __future__ import annotations

import os

import pytest

METHOD_VARIABLE = "AUXDPO_TRL_SUITE_METHOD"
_METHOD_KEY = pytest.StashKey[str]()


def suite_method() -> str:
    return os.environ.get(METHOD_VARIABLE, "").strip()


def machine_config(config_class):
    """TRL's config class with ``bf16=False`` where it is unset and this machine has no bf16
    accelerator (what ``AuxDPOConfig`` does by itself)."""
    from auxdpo.train.defaults import bf16_available

    def dpo_config(*args, **kwargs):
        if "bf16" not in kwargs and not kwargs.get("fp16") and not bf16_available(
                kwargs.get("use_cpu", False)):
            kwargs["bf16"] = False
        return config_class(*args, **kwargs)

    dpo_config.__name__ = dpo_config.__qualname__ = "DPOConfig"
    return dpo_config


def suite_config_factory(method: str):
    """A stand-in for ``trl.DPOConfig``: the same keyword arguments, an ``AuxDPOConfig``."""
    from auxdpo.train import AuxDPOConfig
    from auxdpo.train.trl_losses import method_of

    def suite_config(*args, **kwargs):
        if "method" not in kwargs:
            loss_type = kwargs.get("loss_type")
            if method == "dpo" and loss_type is not None:
                kwargs["method"] = method_of([loss_type] if isinstance(loss_type, str)
                                             else list(loss_type))
            else:
                kwargs["method"] = method
        return AuxDPOConfig(*args, **kwargs)

    suite_config.__name__ = suite_config.__qualname__ = "DPOConfig"
    return suite_config


def suite_trainer_class(method: str):
    """A stand-in for ``trl.DPOTrainer``: ``AuxDPOTrainer``, whose default config (``args``
    left out) trains ``method``."""
    from auxdpo.train import AuxDPOTrainer
    from auxdpo.train.trl_compat import default_config

    config = suite_config_factory(method)

    class SuiteTrainer(AuxDPOTrainer):
        def __init__(self, model, ref_model=None, args=None, *rest, **kwargs):
            if args is None:
                args = config(output_dir=default_config(model).output_dir)
            super().__init__(model, ref_model, args, *rest, **kwargs)

    SuiteTrainer.__name__ = SuiteTrainer.__qualname__ = "DPOTrainer"
    return SuiteTrainer


def substitute(module, method: str) -> bool:
    """Replace the module's ``DPOTrainer``/``DPOConfig`` if they are TRL's (for the TRL run,
    ``method`` empty, only the config's machine default); True if done."""
    import trl

    if getattr(module, "DPOTrainer", None) is not trl.DPOTrainer:
        return False
    if method:
        module.DPOTrainer = suite_trainer_class(method)
    if getattr(module, "DPOConfig", None) is trl.DPOConfig:
        module.DPOConfig = suite_config_factory(method) if method else machine_config(
            trl.DPOConfig)
    return True


def _missing_probe(name: str):
    """``trl.import_utils`` lacks a probe that a newer testing_utils imports: not installed."""
    if name.startswith("is_") and name.endswith("_available"):
        return lambda *args, **kwargs: False
    raise AttributeError(f"module 'trl.import_utils' has no attribute {name!r}")


def pytest_configure(config):
    import importlib

    import torch

    torch.set_num_threads(1)  # tiny models run fastest on one thread
    probes = importlib.import_module("trl.import_utils")
    if "__getattr__" not in vars(probes):
        probes.__getattr__ = _missing_probe
    method = suite_method()
    config.addinivalue_line("markers", "slow: TRL's slow tests")
    config.stash[_METHOD_KEY] = method



def pytest_collection_modifyitems(session, config, items):
    method = config.stash.get(_METHOD_KEY, "")
    modules = {id(item.module): item.module for item in items
               if getattr(item, "module", None) is not None}
    replaced = [m.__name__ for m in modules.values() if substitute(m, method)]
    if not replaced:
        raise pytest.UsageError("trl_suite_plugin: no collected module imported "
                                "trl.DPOTrainer; nothing to substitute")


def pytest_report_header(config):
    method = config.stash.get(_METHOD_KEY, "")
    return [f"trl_suite_plugin: {'AuxDPOTrainer, method=' + method if method else 'TRL as is'}"]
