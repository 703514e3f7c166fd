"""YAML for configs and command-line overrides, with YAML 1.2 booleans.

PyYAML follows YAML 1.1, where ``no``, ``yes``, ``on`` and ``off`` are booleans, so
``save_strategy: no`` (a TRL/HF value) would arrive as ``False`` and fail. Here only
``true``/``false`` (any case) are booleans. Also as in YAML 1.2, ``1e-3`` is a float (PyYAML
reads exponent floats without a dot as strings). Every other scalar resolves as in PyYAML.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["ConfigLoader", "load_yaml"]


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose implicit booleans are YAML 1.2's ``true``/``false`` only."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
# Appended after PyYAML's int resolver, so "3" stays an int and only "1e-3"-style reaches it.
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_yaml(source) -> Any:
    """Parse a YAML string or stream with :class:`ConfigLoader` (safe: no Python objects)."""
    return yaml.load(source, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass
