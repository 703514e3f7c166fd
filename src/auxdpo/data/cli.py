"""``auxdpo data``: check data files before anyone spends GPU hours on them.

    auxdpo data check PATH --format FORMAT [--ties drop|half] [--score-field FIELD] [--json]

FORMAT: ultrafeedback, rewardbench2, mmlu-pro (pairs as they are) or rlhflow-ultrafeedback,
openbmb-ultrafeedback, scored-responses (multi-comparison sets, expanded into every pair).

Exit codes: 0 every row usable, 1 some row unusable (each problem is listed), 2 the file is
missing or the arguments are wrong. No heavy imports here: ``auxdpo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json

from auxdpo.data.check import FORMATS  # light: json and dataclasses only

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` (with its ``check`` action) to the ``auxdpo`` parser."""
    data = subparsers.add_parser("data", help="validate preference data files",
                                 description="Validate preference data files.")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION")
    check = actions.add_parser(
        "check", help="count rows and pairs of a file and list every problem",
        description="Read PATH (.json list, .jsonl or .parquet) as FORMAT; print rows, the "
                    "preference pairs they yield, responses per prompt and pairs per response "
                    "(AuxDPO's response offsets act only where a response is in >= 2 pairs) "
                    "and every problem (row, field, message). Exit 0 when every row is "
                    "usable, 1 otherwise.")
    check.add_argument("path", metavar="PATH", help="file to check")
    check.add_argument("--format", required=True, choices=FORMATS, dest="data_format",
                       help="schema to check the file against")
    check.add_argument("--ties", choices=("drop", "half"), default="drop",
                       help="multi-comparison formats: drop pairs of equal scores (default) or "
                            "keep them with soft label 1/2")
    check.add_argument("--score-field", choices=("fine-grained_score", "overall_score"),
                       default="fine-grained_score", dest="score_field",
                       help="openbmb-ultrafeedback: which completion score ranks responses")
    check.add_argument("--json", action="store_true",
                       help='print {"rows", "pairs", "prompts", "responses", '
                            '"responses_per_prompt", "pairs_per_response", '
                            '"share_in_2_or_more", "problems": [{"row", "field", "message"}]}')
    check.set_defaults(func=_check)
    data.set_defaults(func=lambda args: _usage(data))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _check(args: argparse.Namespace) -> int:
    from auxdpo.data.check import check_file
    from auxdpo.data.comparisons import ExpansionOptions

    options = ExpansionOptions(ties=args.ties, score_field=args.score_field)
    report = check_file(args.path, args.data_format, options)
    print(json.dumps(report.as_dict()) if args.json else report.as_text())
    return 0 if report.ok else 1
