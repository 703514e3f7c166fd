"""TRL's own DPO tests, run against TRL's ``DPOTrainer`` and against ``AuxDPOTrainer``.

    PYTHONPATH=src .venv/bin/python benchmarks/trl_suite.py --trl-tests PATH/TO/trl/tests
    ... --runs trl dpo          # a subset of the three runs
    ... -k "loss_types"         # a subset of the tests (pytest -k)

``--trl-tests`` is the ``tests`` folder of a clone of TRL at the tag of the installed version
(``git clone https://github.com/huggingface/trl && git -C trl checkout v$(pip show trl |
sed -n 's/^Version: //p')``): the folder that holds ``test_dpo_trainer.py`` and
``testing_utils.py``. Those two files are copied, unchanged, into the work folder (``--work``,
default ``runs/trl_suite``), into a package of their own; TRL's ``conftest.py`` is not copied
(its fixtures clean GPU memory and pin hub revisions) and nothing of TRL's is kept in this
repository.

The tests load tiny models and datasets from the hub (``trl-internal-testing/...``). They run
offline here: ``benchmarks/trl_standins.py`` writes local stand-ins at those relative paths in
the work folder, and pytest runs with the work folder as its current directory, so that
``from_pretrained`` and ``load_dataset`` find them (``HF_HUB_OFFLINE=1``). What cannot be stood
in (vision-language models) fails to load, in every run alike.

pytest runs the file once per run, each in its own process:

* ``trl``: as it is, with TRL's ``DPOTrainer``;
* ``dpo``: ``DPOTrainer``/``DPOConfig`` replaced by ``AuxDPOTrainer``/``AuxDPOConfig`` with
  ``method="dpo"`` (``benchmarks/trl_suite_plugin.py``, a pytest plugin; a config naming a TRL
  ``loss_type`` trains that loss);
* ``auxdpo``: the same with ``method="auxdpo"``.

The table (one row a test: passed, failed, error, skipped for each run) and the counts are
printed and written to ``<work>/results.md`` and ``results.json``. Tests that pass with TRL and
fail with ours are listed with their reason where :data:`KNOWN_DIFFERENCES` names one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from trl_standins import build_standins  # noqa: E402
from trl_suite_plugin import METHOD_VARIABLE  # noqa: E402

TEST_FILES = ("test_dpo_trainer.py", "testing_utils.py")
PACKAGE = "trl_tests"
RUNS = {"trl": "", "dpo": "dpo", "auxdpo": "auxdpo"}
OUTCOMES = ("passed", "failed", "error", "skipped")

# (regular expression over the test id, runs it concerns, reason): tests that pass with TRL's
# trainer and fail with ours, on purpose or because of the stand-ins (docs/benchmarks.md).
KNOWN_DIFFERENCES = [
    (r"test_train_loss_types\[sft\]", ("dpo", "auxdpo"),
     "refused: 'sft' alone is supervised fine-tuning (use TRL's SFTTrainer)"),
    (r"test_train_model_dtype$", ("dpo", "auxdpo"),
     "refused: training stops on a non-finite loss or gradient (float16 weights at lr 0.1)"),
    (r"test_train_(multi_)?loss_types", ("auxdpo",),
     "refused: with method auxdpo, loss_type adds only 'sft' to the sigmoid (δ enters its margin)"),
    (r"test_train_with_iterable_dataset|test_init_with_train_dataset\[iterable_dataset\]",
     ("auxdpo",), "refused: AuxDPO's offsets are addressed by row position (no IterableDataset)"),
    (r"test_train_with_ld$", ("auxdpo",),
     "refused: ld_alpha reweights the log-probs that the offsets' products differentiate"),
    (r"test_train_with_sync_ref_model$", ("auxdpo",),
     "refused: sync_ref_model moves the reference; AuxDPO's null space is that of θ₀"),
]


def python_path() -> str:
    """This process's PYTHONPATH made absolute (pytest runs elsewhere), and this folder."""
    entries = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
               if p]
    return os.pathsep.join([str(HERE), *entries])


def prepare_work(work: Path, trl_tests: Path, rebuild: bool) -> None:
    """Stand-ins, the copied test package and a pytest.ini of its own in ``work``."""
    missing = [name for name in TEST_FILES if not (trl_tests / name).is_file()]
    if missing:
        raise SystemExit(f"--trl-tests {trl_tests}: missing {', '.join(missing)}")
    work.mkdir(parents=True, exist_ok=True)
    build_standins(work, rebuild=rebuild)
    package = work / PACKAGE
    if package.exists():
        shutil.rmtree(package)
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in TEST_FILES:
        shutil.copy2(trl_tests / name, package / name)
    (work / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")


def run_pytest(work: Path, run: str, keyword: str | None) -> tuple[Path, float, int]:
    """One pytest process for ``run``; ``(junit xml, wall seconds, exit code)``."""
    junit = work / f"junit-{run}.xml"
    command = [sys.executable, "-m", "pytest", f"{PACKAGE}/test_dpo_trainer.py", "-q",
               "-p", "trl_suite_plugin", "-c", "pytest.ini", "--rootdir", ".",
               f"--junitxml={junit.name}", "-o", "junit_family=xunit2"]
    if keyword:
        command += ["-k", keyword]
    env = dict(os.environ, PYTHONPATH=python_path(), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(work / "hf-home"),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    env[METHOD_VARIABLE] = RUNS[run]
    print(f"## {run}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    log = work / f"pytest-{run}.log"
    with log.open("w") as out:
        code = subprocess.call(command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    print(f"## {run}: exit {code}, {wall:.0f} s wall, log {log}", flush=True)
    return junit, wall, code


def read_junit(path: Path) -> dict[str, dict]:
    """``{test id: {"outcome", "message"}}`` from a JUnit XML report."""
    results = {}
    if not path.is_file():
        return results
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        classname = case.get("classname", "").split(".")[-1]
        test_id = f"{classname}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (node.get("message") or node.text or "").strip().splitlines()
                message = message[0][:200] if message else ""
                break
        results[test_id] = {"outcome": outcome, "message": message}
    return results


def known_reason(test_id: str, run: str) -> str | None:
    for pattern, runs, reason in KNOWN_DIFFERENCES:
        if run in runs and re.search(pattern, test_id):
            return reason
    return None


def summarise(results: dict[str, dict[str, dict]], runs: list[str]) -> dict:
    tests = sorted({t for per_run in results.values() for t in per_run})
    counts = {run: {o: sum(1 for r in results[run].values() if r["outcome"] == o)
                    for o in OUTCOMES} for run in runs}
    differences, only_ours = [], []
    if "trl" in runs:
        for run in (r for r in runs if r != "trl"):
            for test in tests:
                trl = results["trl"].get(test, {}).get("outcome")
                ours = results[run].get(test, {}).get("outcome")
                if trl == "passed" and ours != "passed":
                    differences.append({"run": run, "test": test, "outcome": ours,
                                        "message": results[run].get(test, {}).get("message"),
                                        "reason": known_reason(test, run)})
                elif trl in ("failed", "error") and ours == "passed":
                    only_ours.append({"run": run, "test": test,
                                      "trl_message": results["trl"][test].get("message")})
    return {"tests": tests, "counts": counts, "differences": differences,
            "only_ours": only_ours}


def markdown(results, runs, summary, walls) -> str:
    lines = ["| test | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for test in summary["tests"]:
        cells = [results[run].get(test, {}).get("outcome", "-") for run in runs]
        lines.append(f"| `{test}` | " + " | ".join(cells) + " |")
    lines += ["", "| run | " + " | ".join(OUTCOMES) + " | wall |",
              "|---" * (len(OUTCOMES) + 2) + "|"]
    for run in runs:
        counts = summary["counts"][run]
        lines.append(f"| {run} | " + " | ".join(str(counts[o]) for o in OUTCOMES)
                     + f" | {walls.get(run, 0):.0f} s |")
    if summary["differences"]:
        lines += ["", "Passed with TRL, not with ours:", ""]
        for diff in summary["differences"]:
            reason = diff["reason"] or f"UNEXPLAINED: {diff['message']}"
            lines.append(f"- {diff['run']}: `{diff['test']}` ({diff['outcome']}): {reason}")
    if summary["only_ours"]:
        lines += ["", "Failed with TRL, passed with ours:", ""]
        lines += [f"- {d['run']}: `{d['test']}`: TRL: {d['trl_message']}"
                  for d in summary["only_ours"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trl-tests", type=Path, required=True,
                        help="TRL's tests folder (test_dpo_trainer.py, testing_utils.py)")
    parser.add_argument("--work", type=Path, default=Path("runs/trl_suite"),
                        help="work folder: stand-ins, copied tests, reports")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    parser.add_argument("--rebuild", action="store_true", help="rewrite the stand-ins")
    parser.add_argument("--report-only", action="store_true",
                        help="re-read the JUnit files of earlier runs; run nothing")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    if not args.report_only:
        prepare_work(work, args.trl_tests.resolve(), args.rebuild)
    results, walls = {}, {}
    for run in args.runs:
        if args.report_only:
            junit = work / f"junit-{run}.xml"
        else:
            junit, walls[run], _ = run_pytest(work, run, args.keyword)
        results[run] = read_junit(junit)
    summary = summarise(results, args.runs)
    text = markdown(results, args.runs, summary, walls)
    print(text)
    (work / "results.md").write_text(text)
    (work / "results.json").write_text(json.dumps(
        {"runs": args.runs, "wall_seconds": walls, "results": results, **summary}, indent=1))
    unexplained = [d for d in summary["differences"] if d["reason"] is None]
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
