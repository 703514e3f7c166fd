"""`auxdpo eval`: tables with base and % change, and an end-to-end run on tiny local models."""

import json

import pytest

from auxdpo.harness.evaluation.cli import format_eval_tables


def test_tables_show_base_model_and_change():
    model = {"pairwise": {"n_pairs": 4, "logp_accuracy": 0.6, "implicit_reward_accuracy": 0.75},
             "rewardbench2": {"logp": {"subsets": {"Math": 0.5, "Ties": 0.2},
                                       "counts": {"Math": 2, "Ties": 2}, "mean": 0.35},
                              "implicit_reward": {"mean": 0.4}},
             "mmlu_pro": {"options": {"overall": 0.3, "per_category": {"law": 0.3},
                                      "counts": {"law": 10}}}}
    base = {"pairwise": {"n_pairs": 4, "logp_accuracy": 0.5, "implicit_reward_accuracy": None},
            "rewardbench2": {"logp": {"subsets": {"Math": 0.25, "Ties": 0.0}, "mean": 0.125}},
            "mmlu_pro": {"options": {"overall": 0.4, "per_category": {"law": 0.4}}}}
    text = format_eval_tables(model, base)
    assert "| | base | model | relative change vs base |" in text  # 100·(model − base)/base
    assert "| log-prob accuracy (chosen has higher log π) | 50.00 | 60.00 | +20.00% |" in text
    assert "| implicit-reward accuracy (higher β·log π/π_ref) | 50.00 | 75.00 | +50.00% |" in text
    assert "| Math (2 prompts) | 25.00 | 50.00 | +100.00% |" in text
    assert "| Ties (2 prompts) | 0.00 | 20.00 | n/a |" in text  # base 0: change undefined
    assert "| mean of 2 subsets | 12.50 | 35.00 | +180.00% |" in text
    assert "| law (10) | 40.00 | 30.00 | -25.00% |" in text


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A perturbed tiny-llama saved like an `auxdpo train` run folder, and a small data file."""
    import torch
    import yaml

    from auxdpo.harness.evaluation.models import load_base_model
    from auxdpo.harness.protocol.recipe import ModelSpec

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("run")
    loaded = load_base_model(ModelSpec("tiny-llama", tiny_num_layers=2), torch.device("cpu"))
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in loaded.model.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator))
    loaded.model.save_pretrained(folder / "model")
    loaded.tokenizer.save_pretrained(folder / "model")
    (folder / "model" / "auxdpo_config.yaml").write_text(yaml.safe_dump(
        {"run": {"model_name_or_path": "tiny-llama", "tiny_num_layers": 2,
                 "tiny_hidden_size": 32, "tiny_seed": 0}}))
    data = folder / "uf.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"Q{i}: say {i}", "chosen": f"{i} ok",
                                          "rejected": f"no {i * 7}"}) for i in range(12)))
    return folder, loaded.tokenizer


def test_eval_end_to_end_matches_direct_scoring(tiny_run, capsys):
    import torch

    from auxdpo.cli import main
    from auxdpo.harness.evaluation.metrics import pairwise_metrics
    from auxdpo.harness.evaluation.models import load_model_for_eval
    from auxdpo.harness.evaluation.responses import score_pairs

    folder, tokenizer = tiny_run
    out = folder / "metrics.json"
    code = main(["eval", "--model", str(folder / "model"), "--data", str(folder / "uf.jsonl"),
                 "--format", "ultrafeedback", "--beta", "0.5", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "base: tiny-llama" in printed and "12 pairs" in printed
    result = json.loads(out.read_text())
    rows = [json.loads(line) for line in (folder / "uf.jsonl").read_text().splitlines()]
    policy = load_model_for_eval(str(folder / "model")).model
    base = load_model_for_eval("tiny-llama").model
    with torch.no_grad():
        mine, ref = score_pairs(policy, tokenizer, rows), score_pairs(base, tokenizer, rows)
    expected = pairwise_metrics(mine["chosen_logps"], mine["rejected_logps"],
                                ref["chosen_logps"], ref["rejected_logps"], beta=0.5)
    got = result["model_metrics"]["pairwise"]
    assert got["logp_accuracy"] == expected["logp_accuracy"]
    assert got["implicit_reward_accuracy"] == expected["implicit_reward_accuracy"]
    assert result["base_metrics"]["pairwise"]["logp_accuracy"] == \
        expected["reference_logp_accuracy"]
    line = (f"| log-prob accuracy (chosen has higher log π) | "
            f"{100 * expected['reference_logp_accuracy']:.2f} | "
            f"{100 * expected['logp_accuracy']:.2f} |")
    assert line in printed


def test_eval_rewardbench2_and_bad_input(tiny_run, capsys):
    from auxdpo.cli import main
    from auxdpo.harness.protocol.smoke import write_synthetic_rewardbench2

    folder, _ = tiny_run
    data = write_synthetic_rewardbench2(str(folder / "rb2.json"), per_subset=2, ties=2)
    assert main(["eval", "--model", "tiny-llama", "--base-model", "tiny-llama", "--data", data,
                 "--format", "rewardbench2"]) == 0
    printed = capsys.readouterr().out
    # the same model as its own base: every change is exactly 0
    assert "| mean of 6 subsets |" in printed and "+0.00%" in printed
    assert "implicit-reward accuracy (higher β·log π/π_ref) | " in printed
    assert main(["eval", "--model", "tiny-llama", "--data", data,
                 "--format", "rewardbench2"]) == 2  # no base model named anywhere
    assert "--base-model" in capsys.readouterr().err
    assert main(["eval", "--model", "tiny-llama", "--base-model", "tiny-llama", "--data", data,
                 "--format", "rewardbench2", "--generate"]) == 2
