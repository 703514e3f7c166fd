"""argparse types: what they accept, and the one-line message for what they refuse."""

from __future__ import annotations

import argparse
import math

import pytest

from auxdpo.argtypes import finite_positive_float, positive_int


@pytest.mark.parametrize("text, value", [("1", 1), ("7", 7), (" 12 ", 12), ("+3", 3)])
def test_positive_int_accepts_integers_from_one(text, value):
    assert positive_int(text) == value


@pytest.mark.parametrize("text, message", [
    ("0", "expected a positive integer, got 0"),
    ("-4", "expected a positive integer, got -4"),
    ("1.5", "expected a positive integer, got '1.5'"),
    ("ten", "expected a positive integer, got 'ten'"),
    ("", "expected a positive integer, got ''"),
])
def test_positive_int_refusals_name_the_value(text, message):
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        positive_int(text)
    assert str(exc.value) == message


@pytest.mark.parametrize("text, value", [("0.5", 0.5), ("1e-3", 1e-3), ("2", 2.0),
                                         ("5e-324", 5e-324)])
def test_finite_positive_float_accepts_finite_positive_numbers(text, value):
    result = finite_positive_float(text)
    assert result == value and isinstance(result, float) and math.isfinite(result)


@pytest.mark.parametrize("text, message", [
    ("nan", "expected a finite number > 0, got nan"),
    ("inf", "expected a finite number > 0, got inf"),
    ("-inf", "expected a finite number > 0, got -inf"),
    ("0", "expected a finite number > 0, got 0"),
    ("-0.0", "expected a finite number > 0, got -0.0"),
    ("-1e-3", "expected a finite number > 0, got -1e-3"),
    ("wide", "expected a number, got 'wide'"),
])
def test_finite_positive_float_refusals_name_the_value(text, message):
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        finite_positive_float(text)
    assert str(exc.value) == message


def test_a_parser_reports_the_option_and_exits_2(capsys):
    parser = argparse.ArgumentParser(prog="prog")
    parser.add_argument("--steps", type=positive_int)
    parser.add_argument("--beta", type=finite_positive_float)
    assert vars(parser.parse_args(["--steps", "3", "--beta", "0.1"])) == {"steps": 3,
                                                                          "beta": 0.1}
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--beta", "nan"])
    assert exc.value.code == 2
    assert "argument --beta: expected a finite number > 0, got nan" in capsys.readouterr().err
