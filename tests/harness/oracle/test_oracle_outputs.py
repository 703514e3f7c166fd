"""An oracle run's table: one row per cell, mean ± std, capped solves flagged and counted."""

import math

from auxdpo.harness.oracle.outputs import capped_note, markdown_table


def _stat(mean, std=0.0):
    return {"mean": mean, "std": std}


def _entry(method, capped=0, **extra):
    return {"capacity": "norm", "dim": 16, "responses": 9, "beta": 10.0, "method": method,
            "seeds": 2, "capped": capped, "gap_closed": _stat(0.5, 0.25),
            "reward": _stat(1.25), "kl": _stat(0.001), "reversal": _stat(0.125),
            "heldout_acc": _stat(math.nan), **extra}


def test_markdown_table_rows_by_hand():
    table = markdown_table([_entry("dpo"), _entry("auxdpo")])
    lines = table.splitlines()
    assert lines[0] == ("| capacity | d | S·A | β | method | seeds | at cap | gap closed | E[r*] "
                        "| KL(π‖π₀) | reversal | held-out acc |")
    assert lines[1] == "|" + "---|" * 12
    assert lines[2] == ("| norm | 16 | 9 | 10 | dpo | 2 | 0 | 0.500 ± 0.250 | 1.2500 ± 0.0000 "
                        "| 1.00e-03 ± 0.00e+00 | 0.125 ± 0.000 | – |")
    assert len(lines) == 4 and "⚠" not in table


def test_capped_rows_are_flagged_and_counted_in_the_note():
    summary = [_entry("dpo", capped=2), _entry("ipo", capped=1), _entry("auxdpo")]
    assert capped_note([_entry("auxdpo")]) is None
    note = capped_note(summary)
    assert note.startswith("⚠ 3 solve(s) stopped at the iteration cap")
    table = markdown_table(summary)
    assert "| dpo ⚠ | 2 | 2 |" in table and "| ipo ⚠ | 2 | 1 |" in table
    assert "| auxdpo | 2 | 0 |" in table and table.rstrip().endswith(note)


def test_an_n_sweep_adds_the_pairs_column():
    table = markdown_table([_entry("dpo", pairs=100), _entry("dpo", pairs=1000)])
    lines = table.splitlines()
    assert "| β | n | method |" in lines[0] and lines[1] == "|" + "---|" * 13
    assert "| 10 | 100 | dpo |" in lines[2] and "| 10 | 1000 | dpo |" in lines[3]
