"""Name and type checks of a flat config before it reaches the dataclasses.

HF's ``TrainingArguments`` trusts its inputs: ``max_steps: "ten"`` fails deep inside its
``__post_init__`` with a TypeError, and ``learning_rate: [1e-3]`` only when the optimizer is
built, minutes later. Here every value is checked against its field's annotation (scalars,
unions, lists and dicts; anything else passes through) and NaN is refused for every number,
so the error names the key. An unknown key is named with what to write instead: the current
name of a key transformers renamed (``warmup_ratio``), or the closest known key (a typo).
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from typing import Any

__all__ = ["RENAMED_KEYS", "check_config_values", "check_finite_positive",
           "unknown_keys_message", "unknown_method_message"]

# Keys that recipes written for older transformers/TRL carry, and what the installed ones take.
RENAMED_KEYS = {
    "warmup_ratio": "use warmup_steps: transformers >= 5 reads a value below 1 as a fraction "
                    "of the total steps, e.g. warmup_steps: 0.1",
    # AuxDPO's performance switches, now automatic with measured fallbacks (docs/trainer.md).
    "aux_fused_reference": "removed: the loss takes log π_ref from the offsets' products pass "
                           "wherever it can (global/batch, 32/64-bit models); drop the key",
    "aux_share_prefix": "removed: the reference tail starts from the policy's own prefix "
                        "wherever the first batch's check allows; drop the key",
    "aux_truncate_products": "removed: the products run through the trainable tail whenever "
                             "the model's structure is recognised; drop the key",
    "aux_keep_reference_graph": "removed: the offsets' step recomputes the reference tail "
                                "(less memory; docs/benchmarks.md); drop the key",
    "aux_jvp": "removed: A_Bᵀu is a central difference (forward-mode AD for 16-bit models "
               "and the notebook preset); drop the key",
    "amp_sign": "removed: give lambda_amp a negative value to reward ‖δ_B‖² (amp_sign: -1)",
    "delta_optimizer": "removed: the offsets always train with their lazy row-wise Adam; "
                       "drop the key",
    "recompute_u_every": "removed: u = A·δ is kept exactly and restored on resume; drop "
                         "the key",
}

# Fields HF documents as str but that also take a bool (``resume_from_checkpoint: true``).
_ALSO_BOOL = {"resume_from_checkpoint"}
_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
          list: "a list", dict: "a mapping"}


def _matches(value: Any, expected: Any) -> bool | None:
    """True/False when ``expected`` is a type this checks, None when it is not."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        answers = [_matches(value, arg) for arg in typing.get_args(expected)]
        if any(answer is True for answer in answers):
            return True
        return None if any(answer is None for answer in answers) else False
    if expected is type(None):
        return value is None
    if origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            return True
        args = typing.get_args(expected)  # a single item where a list is expected is fine
        return _matches(value, args[0]) if args else False
    if origin is dict:
        return isinstance(value, dict)
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected in (str, list, dict):
        return isinstance(value, expected)
    return None


def _expected_name(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        names = [_expected_name(arg) for arg in typing.get_args(expected)
                 if arg is not type(None)]
        return " or ".join(dict.fromkeys(name for name in names if name))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    return _NAMES.get(expected, getattr(expected, "__name__", str(expected)))


def check_config_values(values: dict[str, Any], *classes) -> None:
    """Raise ValueError naming the first key whose value has the wrong type or is NaN."""
    hints: dict[str, Any] = {}
    for cls in classes:
        try:
            hints.update(typing.get_type_hints(cls))
        except (NameError, TypeError):  # an annotation that cannot be resolved: skip the class
            continue
    for key, value in values.items():
        if isinstance(value, float) and math.isnan(value):
            raise ValueError(f"{key}: NaN is not a valid value")
        expected = hints.get(key)
        if expected is None or (key in _ALSO_BOOL and isinstance(value, bool)):
            continue
        if _matches(value, expected) is False:
            raise ValueError(f"{key}: expected {_expected_name(expected)}, got {value!r}")


def unknown_keys_message(unknown, known, what: str = "unknown config key(s)") -> str:
    """``"unknown config key(s): lerning_rate (did you mean learning_rate?)"``: each unknown
    key with what to write instead (:data:`RENAMED_KEYS`, else the closest known key), when
    there is something; with several unknown keys each hint starts with its key."""
    unknown = sorted(unknown)
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
        hint = RENAMED_KEYS.get(key) or (f"did you mean {close[0]}?" if close else None)
        if hint:
            hints.append(f"{key}: {hint}" if len(unknown) > 1 else hint)
    message = f"{what}: {', '.join(unknown)}"
    return f"{message} ({'; '.join(hints)})" if hints else message


def unknown_method_message(method: Any, paper_methods, other_methods) -> str:
    """``"method must be one of the paper's dpo, ipo, dpop, auxdpo, or one of TRL's loss
    types: hinge, ...; got 'auxpdo' (did you mean auxdpo?)"``: the paper's four methods
    first, the closest name (TRL's ``sigmoid`` is ``dpo``) when there is one."""
    paper, others = list(paper_methods), [m for m in other_methods if m not in paper_methods]
    message = (f"method must be one of the paper's {', '.join(paper)}, or one of TRL's loss "
               f"types: {', '.join(others)}; got {method!r}")
    if method == "sigmoid":
        return f"{message} (TRL's loss_type sigmoid is method dpo)"
    if isinstance(method, str):
        close = difflib.get_close_matches(method, paper + others, n=1, cutoff=0.6)
        if close:
            return f"{message} (did you mean {close[0]}?)"
    return message


def check_finite_positive(name: str, value: Any) -> None:
    """``value`` must be a finite number > 0 (β, learning rates)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
