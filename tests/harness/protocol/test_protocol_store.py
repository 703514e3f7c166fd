"""Where a protocol folder keeps result files, and reading one back (None = not finished)."""

import json
import os

from auxdpo.harness.protocol.recipe import RunSpec
from auxdpo.harness.protocol.store import base_path, read_result, result_path


def test_paths_follow_the_documented_layout():
    run = RunSpec("mmlu-pro", "id", "dpo", "100%", 0)
    assert result_path("OUT", run) == os.path.join("OUT", "runs", f"{run.run_id}.json")
    assert base_path("OUT", "mmlu-pro") == os.path.join("OUT", "base", "mmlu-pro.json")


def test_read_result_returns_only_finished_results(tmp_path):
    path = tmp_path / "r.json"
    assert read_result(str(path)) is None                          # missing
    path.write_text(json.dumps({"metrics": {"acc": 0.5}, "seconds": 3}))
    assert read_result(str(path)) == {"metrics": {"acc": 0.5}, "seconds": 3}
    for text in ('{"metrics": ', '{"seconds": 3}', '[1, 2]'):      # torn, no metrics, no dict
        path.write_text(text)
        assert read_result(str(path)) is None, text
    path.write_bytes(b"\xff\xfe\x00")
    assert read_result(str(path)) is None
