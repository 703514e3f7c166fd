"""``auxdpo data``: check data files before anyone spends GPU hours on them.

    auxdpo data check PATH_OR_HUB_NAME --format FORMAT [--split S] [--config C]
        [--ties drop|half] [--score-field FIELD] [--json]

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
        description="Read PATH (.json list, .jsonl or .parquet, or a hub data set name, "
                    "loaded as auxdpo train loads dataset_name) as FORMAT; print rows, the "
                    "preference pairs they yield, responses per prompt and pairs per response "
                    "(AuxDPO's response offsets act only where a response is in >= 2 pairs), "
                    "every problem (row, field, message) and a verdict: what AuxDPO will do "
                    "with these pairs. Exit 0 when every row is usable, 1 otherwise.")
    check.add_argument("path", metavar="PATH", help="file to check, or a hub data set name")
    check.add_argument("--split", default=None,
                       help="hub data sets: the split (default train; train_prefs for "
                            "HuggingFaceH4/ultrafeedback_binarized)")
    check.add_argument("--config", default=None, dest="data_config",
                       help="hub data sets: the configuration name")
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
                            '"share_in_2_or_more", "problems": [{"row", "field", "message"}], '
                            '"verdict"}')
    check.set_defaults(func=_check)
    data.set_defaults(func=lambda args: _usage(data))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _check(args: argparse.Namespace) -> int:
    from auxdpo.data.check import check_file
    from auxdpo.data.comparisons import ExpansionOptions

    options = ExpansionOptions(ties=args.ties, score_field=args.score_field)
    report = check_file(args.path, args.data_format, options, split=args.split,
                        config=args.data_config)
    print(json.dumps(report.as_dict()) if args.json else report.as_text())
    return 0 if report.ok else 1
