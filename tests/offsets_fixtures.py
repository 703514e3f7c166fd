"""Tiny float64 causal LMs, TRL-format preference batches and a brute-force reference
Jacobian, shared by test_logps.py and the tests in tests/offsets/ and tests/train/."""

from __future__ import annotations

import types

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from auxdpo.logps import model_sequence_logps

VOCAB = 50


def tiny_gpt2(attn: str = "sdpa", seed: int = 0, layers: int = 2) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=layers, n_embd=16, n_head=2, vocab_size=VOCAB, n_positions=64,
                        bos_token_id=0, eos_token_id=0, attn_implementation=attn)
    return GPT2LMHeadModel(config).double()


def _rms_norm_float64(self, hidden_states):
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def tiny_llama(attn: str = "sdpa", seed: int = 0) -> torch.nn.Module:
    """Llama-style model in float64. HF's LlamaRMSNorm computes in float32 whatever the
    model's dtype; that makes gradients non-linear in the cotangent at the 1e-7 level, so the
    norms are switched to a float64 forward here (same formula)."""
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, vocab_size=VOCAB,
                         max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
                         pad_token_id=0, attn_implementation=attn)
    return float64_rms_norms(LlamaForCausalLM(config).double())


def float64_rms_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Switch every ``*RMSNorm`` of a float64 model to a float64 forward (same formula)."""
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            module.forward = types.MethodType(_rms_norm_float64, module)
    return model


def tiny_family(arch: str, layers: int = 3, seed: int = 0) -> torch.nn.Module:
    """A float64 gpt2 / llama / qwen2 / qwen3 model of ``layers`` blocks, vocabulary VOCAB."""
    from auxdpo.train.tiny import build_tiny_model

    model = build_tiny_model(arch, vocab_size=VOCAB, num_layers=layers, hidden_size=16,
                             num_heads=2, max_positions=64, dtype=torch.float64, seed=seed)
    return float64_rms_norms(model)


def preference_batch(size: int, *, seed: int = 0, length: int = 12,
                     index: list[int] | None = None) -> dict[str, torch.Tensor]:
    """``2·size`` right-padded rows (prompt+chosen, then prompt+rejected), varied lengths."""
    gen = torch.Generator().manual_seed(seed)
    rows = 2 * size
    input_ids = torch.randint(1, VOCAB, (rows, length), generator=gen)
    attention_mask = torch.zeros(rows, length, dtype=torch.long)
    completion_mask = torch.zeros(rows, length, dtype=torch.long)
    for r in range(rows):
        prompt = 2 + int(torch.randint(0, 3, (1,), generator=gen))
        total = prompt + 2 + int(torch.randint(0, length - prompt - 1, (1,), generator=gen))
        attention_mask[r, :total] = 1
        completion_mask[r, prompt:total] = 1
        input_ids[r, total:] = 0
    batch = {"input_ids": input_ids, "attention_mask": attention_mask,
             "completion_mask": completion_mask}
    if index is not None:
        batch["aux_index"] = torch.tensor(index, dtype=torch.long)
    return batch


def dataset_batches(num_examples: int, batch_size: int, seed: int = 0) -> list[dict]:
    """Batches covering rows 0..n-1 once; example i is always the same pair of responses."""
    batches = []
    for start in range(0, num_examples, batch_size):
        index = list(range(start, min(start + batch_size, num_examples)))
        batches.append(preference_batch(len(index), seed=seed + start, index=index))
    return batches


def select(dataset: list[dict], rows: list[int]) -> dict[str, torch.Tensor]:
    """A batch made of the given dataset rows (in that order), from ``dataset_batches``."""
    located = {}
    for batch in dataset:
        size = batch["aux_index"].shape[0]
        for k, row in enumerate(batch["aux_index"].tolist()):
            located[row] = (batch, k, size)
    out = {key: [] for key in ("input_ids", "attention_mask", "completion_mask")}
    for half in (0, 1):
        for row in rows:
            batch, k, size = located[row]
            for key in out:
                out[key].append(batch[key][half * size + k])
    result = {key: torch.stack(value) for key, value in out.items()}
    result["aux_index"] = torch.tensor(rows, dtype=torch.long)
    return result


def brute_force_columns(model, batch, param_names, *, average=False) -> torch.Tensor:
    """``(d, 2B)``: column j = ∇ log π(a_j|s_j) by one explicit backward pass per response,
    the model in eval mode at its current parameters."""
    named = dict(model.named_parameters())
    params = [named[name] for name in param_names]
    was_training = model.training
    model.eval()
    logps = model_sequence_logps(model, batch, average=average)
    columns = []
    for j in range(logps.shape[0]):
        grads = torch.autograd.grad(logps[j], params, retain_graph=True, allow_unused=True)
        columns.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                                  for g, p in zip(grads, params)]))
    model.train(was_training)
    return torch.stack(columns, dim=1)


def brute_force_dataset_matrix(model, dataset, param_names, num_examples) -> torch.Tensor:
    """A over the whole dataset, ``(d, 2n)``, column 2i chosen and 2i+1 rejected of row i."""
    blocks = {}
    for batch in dataset:
        columns = brute_force_columns(model, batch, param_names)
        size = batch["aux_index"].shape[0]
        for k, row in enumerate(batch["aux_index"].tolist()):
            blocks[2 * row] = columns[:, k]
            blocks[2 * row + 1] = columns[:, size + k]
    return torch.stack([blocks[c] for c in range(2 * num_examples)], dim=1)




def comparison_rows(num_prompts: int = 3, responses: int = 3, *, seed: int = 0,
                    pairs: list[tuple[int, int]] | None = None):
    """Token ids of a multi-comparison set: each prompt has ``responses`` completions and
    every listed pair (a, b) of them (default: all a < b, then (last, first) again) is a row.

    Returns ``(prompt_ids, chosen_ids, rejected_ids)``: lists of id lists, one entry per row.
    """
    gen = torch.Generator().manual_seed(seed)
    if pairs is None:
        pairs = [(a, b) for a in range(responses) for b in range(a + 1, responses)]
        pairs.append((responses - 1, 0))
    prompt_ids, chosen_ids, rejected_ids = [], [], []
    for _ in range(num_prompts):
        prompt = torch.randint(1, VOCAB, (3,), generator=gen).tolist()
        completions = [torch.randint(1, VOCAB, (2 + k % 3,), generator=gen).tolist()
                       for k in range(responses)]
        for a, b in pairs:
            prompt_ids.append(prompt)
            chosen_ids.append(completions[a])
            rejected_ids.append(completions[b])
    return prompt_ids, chosen_ids, rejected_ids


def id_batch(ids, rows: list[int], length: int = 10) -> dict[str, torch.Tensor]:
    """TRL-layout batch (prompt+chosen rows, then prompt+rejected) of the given dataset rows
    of ``comparison_rows`` output, right-padded to ``length``, with ``aux_index``."""
    prompt_ids, chosen_ids, rejected_ids = ids
    sequences, masks = [], []
    for completions in (chosen_ids, rejected_ids):
        for row in rows:
            sequences.append(prompt_ids[row] + completions[row])
            masks.append([0] * len(prompt_ids[row]) + [1] * len(completions[row]))
    input_ids = torch.zeros(len(sequences), length, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    completion_mask = torch.zeros_like(input_ids)
    for r, (sequence, mask) in enumerate(zip(sequences, masks)):
        input_ids[r, :len(sequence)] = torch.tensor(sequence)
        attention_mask[r, :len(sequence)] = 1
        completion_mask[r, :len(mask)] = torch.tensor(mask)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "completion_mask": completion_mask,
            "aux_index": torch.tensor(rows, dtype=torch.long)}


def id_batches(ids, batch_size: int) -> list[dict]:
    """Batches covering every row of ``comparison_rows`` output once, in order."""
    n = len(ids[0])
    return [id_batch(ids, list(range(s, min(s + batch_size, n))))
            for s in range(0, n, batch_size)]


# ---- a small dataset with its brute-force A, for the offsets' modes (tests/offsets/) --------

STORE_EXAMPLES = 12


def store_world():
    """(model, dataset batches, brute-force A (d × 2n), per-example model margins), n = 12."""
    model = tiny_gpt2("sdpa", layers=1)
    dataset = dataset_batches(STORE_EXAMPLES, 4)
    names = [n for n, _ in model.named_parameters()]
    matrix = brute_force_dataset_matrix(model, dataset, names, STORE_EXAMPLES)
    margins = torch.linspace(-2, 2, STORE_EXAMPLES, dtype=torch.float64)
    return model, dataset, matrix, margins


def make_offsets(world, **kwargs):
    """AuxOffsets over the store world's n rows (float64 unless ``dtype`` is given)."""
    from auxdpo.offsets import AuxOffsets
    from auxdpo.offsets.products import ReferenceProducts

    kwargs.setdefault("dtype", torch.float64)
    return AuxOffsets(STORE_EXAMPLES, ReferenceProducts(world[0]), **kwargs)


def dpo_backward(offsets, batch, margins, global_batch_size):
    """The trainer's part: mean-over-G AuxDPO-style loss of the batch, backward into δ."""
    chosen, rejected = offsets.deltas(batch["aux_index"])
    m = margins[batch["aux_index"]]
    loss = -torch.nn.functional.logsigmoid(m + chosen - rejected).sum() / global_batch_size
    loss.backward()
    offsets.accumulate(batch)


def dpo_grad(delta, rows, margins, global_batch_size):
    """Brute-force ∂(mean DPO loss)/∂δ, (n, 2)."""
    delta = delta.clone().requires_grad_(True)
    index = torch.tensor(rows)
    loss = -torch.nn.functional.logsigmoid(margins[index] + delta[index, 0]
                                           - delta[index, 1]).sum()
    (loss / global_batch_size).backward()
    return delta.grad


def flat(delta):
    return delta.reshape(-1)                   # (δ_0w, δ_0l, δ_1w, ...), A's column order


def random_rows(gen, size=4, num_examples=STORE_EXAMPLES):
    return torch.randperm(num_examples, generator=gen)[:size].tolist()
