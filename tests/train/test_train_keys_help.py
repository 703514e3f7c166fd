"""The key list of ``auxdpo train --help``: three sections, every key with its default.

Which help words reach the CLI's output is tested in test_train_cli.py; the offsets' default
values in test_train_config.py.
"""

from __future__ import annotations

from dataclasses import MISSING, fields

import pytest
from trl import DPOConfig

from auxdpo.train.config import AuxDPOConfig
from auxdpo.train.keys_help import COMMON_TRL_KEYS, config_keys_help
from auxdpo.train.run_arguments import RunArguments

TITLES = ["what to load (RunArguments):", "method and offsets (added to TRL's DPOConfig):",
          "common TRL / transformers keys (every DPOConfig field is accepted):"]


@pytest.fixture(scope="module")
def sections():
    text = config_keys_help()
    blocks = text.split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == TITLES
    return {title: block for title, block in zip(TITLES, blocks)}


def keys(block):
    return [line.split(" (default ")[0].strip() for line in block.splitlines()
            if line.startswith("  ") and not line.startswith("      ")]


def test_each_section_lists_its_keys_with_their_defaults(sections):
    load, ours, common = (sections[t] for t in TITLES)
    assert keys(load) == [f.name for f in fields(RunArguments)]
    assert "  model_name_or_path (default 'tiny-gpt2')" in load.splitlines()
    assert "  max_train_rows (default None)" in load.splitlines()
    inherited = {f.name for f in fields(DPOConfig)}
    added = [f for f in fields(AuxDPOConfig) if f.init and f.name not in inherited]
    assert keys(ours) == [f.name for f in added] and len(added) > 5
    for f in added:
        default = f.default if f.default is not MISSING else f.default_factory()
        assert f"  {f.name} (default {default!r})" in ours.splitlines()
    assert keys(common) == list(COMMON_TRL_KEYS)
    assert set(COMMON_TRL_KEYS) <= inherited


def test_common_keys_show_the_first_sentence_and_auxdpos_note(sections):
    common = sections[TITLES[2]]
    lines = common.splitlines()
    start = [i for i, line in enumerate(lines) if line.startswith("  learning_rate (default")]
    body = []
    for line in lines[start[0] + 1:]:
        if not line.startswith("      "):
            break
        body.append(line.strip())
    text = " ".join(body)
    assert text.endswith("TRL's default is tiny: set your own.")
    assert text.count(". ") <= 1  # one sentence of TRL's help, then the note


@pytest.mark.parametrize("width", [40, 88])
def test_help_text_is_wrapped_to_the_width(width):
    text = config_keys_help(width=width)
    wrapped = [line for line in text.splitlines() if line.startswith("      ")]
    assert wrapped and max(map(len, wrapped)) <= width
    assert max(map(len, wrapped)) > width - 15  # and filled, not cut short
