"""VJP, JVP and Jacobian with A_B against A_B built column by column by explicit backward
passes (float64), for GPT-2 and Llama-style models, sdpa and eager attention, full, partial
and LoRA trainable sets."""

import warnings

import pytest
import torch

from auxdpo.offsets.products import ReferenceProducts, sequence_batches
from offsets_fixtures import (
    brute_force_columns,
    preference_batch,
    tiny_gpt2,
    tiny_llama,
)
from tolerance import assert_close

BUILDERS = {"gpt2": tiny_gpt2, "llama": tiny_llama}
LAST_BLOCK = {"gpt2": "transformer.h.1.", "llama": "model.layers.1."}


def _check_products(model, products, batch, param_names):
    columns = brute_force_columns(model, batch, param_names)          # (d, N)
    gen = torch.Generator().manual_seed(7)
    cotangent = torch.randn(columns.shape[1], generator=gen, dtype=torch.float64)
    tangent = torch.randn(columns.shape[0], generator=gen, dtype=torch.float64)
    # vjp/jvp keep their fixed 1e-8: they differ from the brute-force columns by ~1e6
    # float64 roundings at these magnitudes, so a round-off tolerance would not hold.
    torch.testing.assert_close(products.vjp(batch, cotangent), columns @ cotangent,
                               rtol=0, atol=1e-8)
    torch.testing.assert_close(products.jvp(batch, tangent), columns.T @ tangent,
                               rtol=0, atol=1e-8)
    assert_close(products.jacobian(batch), columns.T, ops=1e3)
    assert products.dim == columns.shape[0]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("subset", ["all", "last_block"])
def test_products_match_explicit_columns(arch, attn, subset):
    model = BUILDERS[arch](attn)
    assert model.config._attn_implementation == attn
    names = [n for n, _ in model.named_parameters()]
    if subset == "last_block":
        names = [n for n in names if n.startswith(LAST_BLOCK[arch])]
        for name, p in model.named_parameters():
            p.requires_grad_(name in names)
    products = ReferenceProducts(model)          # default: the parameters with requires_grad
    assert products.param_names == names
    _check_products(model, products, preference_batch(3, seed=11), names)


@pytest.mark.parametrize("init_lora_weights", [True, False])
def test_products_lora(init_lora_weights):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                             lora_dropout=0.0, init_lora_weights=init_lora_weights)
    model = peft.get_peft_model(tiny_llama("sdpa"), config)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    products = ReferenceProducts(model)
    _check_products(model, products, preference_batch(2, seed=5), names)


def test_reference_is_a_snapshot_and_model_untouched():
    model = tiny_gpt2("sdpa")
    names = [n for n, _ in model.named_parameters()]
    batch = preference_batch(2, seed=3)
    products = ReferenceProducts(model)
    columns = brute_force_columns(model, batch, names)                # at θ₀
    model.zero_grad(set_to_none=True)
    with torch.no_grad():                                             # "training" moves θ
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cotangent = torch.linspace(-1, 1, 4, dtype=torch.float64)
    assert_close(products.vjp(batch, cotangent), columns @ cotangent, ops=1e3)
    assert all(p.grad is None for p in model.parameters())
    moved = brute_force_columns(model, batch, names)
    assert (moved - columns).abs().max() > 1e-3                        # θ really moved


def test_dropout_off_and_modes_restored():
    torch.manual_seed(0)
    model = tiny_gpt2("eager")
    model.config.resid_pdrop = 0.5
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    model.train()
    model.transformer.h[0].eval()            # a mixed state must come back as it was
    names = [n for n, _ in model.named_parameters()]
    batch = preference_batch(2, seed=9)
    products = ReferenceProducts(model)
    tangent = torch.randn(products.dim, dtype=torch.float64)
    first, second = products.jvp(batch, tangent), products.jvp(batch, tangent)
    assert torch.equal(first, second)
    assert model.training and not model.transformer.h[0].training
    assert model.transformer.h[1].training
    columns = brute_force_columns(model, batch, names)                 # eval mode inside
    assert_close(first, columns.T @ tangent, ops=1e4)
    assert model.training


def test_vjp_with_fused_attention_kernels():
    model = tiny_gpt2("sdpa")
    names = [n for n, _ in model.named_parameters()]
    batch = preference_batch(2, seed=6)
    products = ReferenceProducts(model, math_attention_vjp=False)
    cotangent = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    assert_close(products.vjp(batch, cotangent),
                 brute_force_columns(model, batch, names) @ cotangent, ops=1e3)


def test_average_log_probs():
    model = tiny_gpt2("sdpa")
    names = [n for n, _ in model.named_parameters()]
    batch = preference_batch(2, seed=2)
    products = ReferenceProducts(model, average=True)
    columns = brute_force_columns(model, batch, names, average=True)
    counts = batch["completion_mask"][:, 1:].sum(1).double()
    summed = brute_force_columns(model, batch, names)
    assert_close(columns, summed / counts, ops=1e3)
    cotangent = torch.ones(4, dtype=torch.float64)
    assert_close(products.vjp(batch, cotangent), columns @ cotangent, ops=1e3)


def test_jacobian_rows_are_the_vjps_of_unit_cotangents():
    """Row j of the batched Jacobian is A_B·e_j, one backward pass each."""
    model = tiny_gpt2("sdpa")
    products = ReferenceProducts(model)
    batch = preference_batch(2, seed=1)
    jacobian = products.jacobian(batch)
    units = torch.eye(jacobian.shape[0], dtype=products.dtype)
    rows = torch.stack([products.vjp(batch, unit) for unit in units])
    assert_close(jacobian, rows, ops=100)


def test_jacobian_of_chosen_rows_is_those_rows_of_the_whole():
    model = tiny_gpt2("sdpa")
    products = ReferenceProducts(model)
    batch = preference_batch(2, seed=1)
    whole = products.jacobian(batch)
    assert_close(products.jacobian(batch, rows=torch.tensor([3, 0])), whole[[3, 0]], ops=100)
    assert products.jacobian(batch, rows=torch.tensor([], dtype=torch.long)).shape == (
        0, products.dim)


def test_sequence_batches_cut_every_per_sequence_tensor_to_one_row():
    batch = {"input_ids": torch.arange(12).reshape(4, 3), "attention_mask": torch.ones(4, 3),
             "aux_index": torch.tensor([5, 9]), "flag": torch.tensor(1.0)}
    parts = sequence_batches(batch)
    assert len(parts) == 4
    for j, part in enumerate(parts):
        assert part["input_ids"].tolist() == [[3 * j, 3 * j + 1, 3 * j + 2]]
        assert part["attention_mask"].shape == (1, 3)
        assert part["aux_index"] is batch["aux_index"] and part["flag"] is batch["flag"]
    assert sequence_batches({}) == []


def test_jacobian_falls_back_to_one_pass_per_row(monkeypatch):
    """When vmap cannot batch the model, the Jacobian comes from N backward passes (with a
    warning) and has the same values."""
    model = tiny_gpt2("sdpa")
    products = ReferenceProducts(model)
    batch = preference_batch(2, seed=1)
    expected = products.jacobian(batch)

    def refuse(*args, **kwargs):
        raise NotImplementedError("no batching rule")

    monkeypatch.setattr(torch.func, "jacrev", refuse)
    with pytest.warns(RuntimeWarning, match="batched Jacobian failed"):
        fallback = products.jacobian(batch)
    assert_close(fallback, expected, ops=100)


def test_bad_arguments():
    model = tiny_gpt2("sdpa")
    with pytest.raises(ValueError, match="not found"):
        ReferenceProducts(model, ["nope.weight"])
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing is trainable"):
        ReferenceProducts(model)
    products = ReferenceProducts(model, ["transformer.ln_f.weight"])
    with pytest.raises(ValueError, match="cotangent"):
        products.vjp(preference_batch(2), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="expected"):
        products.jvp(preference_batch(2), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("subset", ["all", "last_block", "lora"])
def test_double_vjp_jvp_and_primal(arch, subset):
    """jvp_method="double-vjp" gives A_Bᵀt (explicit columns, 1e-8) and, as primal, the
    reference log-probs of ``logps``; the forward-mode primal agrees too."""
    model = BUILDERS[arch]("sdpa")
    if subset == "lora":
        peft = pytest.importorskip("peft")
        targets = ["c_attn"] if arch == "gpt2" else ["q_proj", "v_proj"]
        config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=targets, lora_dropout=0.0,
                                 init_lora_weights=False)
        model = peft.get_peft_model(model, config)
    elif subset == "last_block":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(LAST_BLOCK[arch]))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    batch = preference_batch(3, seed=13)
    columns = brute_force_columns(model, batch, names)                # (d, N)
    tangent = torch.randn(columns.shape[0], generator=torch.Generator().manual_seed(3),
                          dtype=torch.float64)
    for method in ("double-vjp", "forward"):
        products = ReferenceProducts(model, jvp_method=method)
        logps, directional = products.logps_and_jvp(batch, tangent)
        assert_close(directional, columns.T @ tangent, ops=1e4)
        assert_close(products.jvp(batch, tangent), columns.T @ tangent, ops=1e4)
        assert_close(logps, products.logps(batch), ops=100)


def test_double_vjp_single_norm_weight():
    """A single small trainable tensor inside the network (a LayerNorm weight)."""
    model = tiny_gpt2("sdpa")
    names = ["transformer.h.1.ln_1.weight"]
    products = ReferenceProducts(model, names, jvp_method="double-vjp")
    batch = preference_batch(2, seed=2)
    columns = brute_force_columns(model, batch, names)
    tangent = torch.ones(products.dim, dtype=torch.float64)
    assert_close(products.jvp(batch, tangent), columns.T @ tangent, ops=1e4)


# ---- truncated products: the trainable tail only ------------------------------------------

BLOCKS = {"gpt2": "transformer.h", "llama": "model.layers", "qwen2": "model.layers",
          "qwen3": "model.layers"}


def _trainable(model, predicate):
    names = [n for n, _ in model.named_parameters() if predicate(n)]
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
    return names


def _check_linearize(products, batch, columns, full_logps):
    gen = torch.Generator().manual_seed(5)
    tangent = torch.randn(columns.shape[0], generator=gen, dtype=torch.float64)
    cotangent = torch.randn(columns.shape[1], generator=gen, dtype=torch.float64)
    for keep in (False, True):
        linear = products.linearize(batch, tangent, keep_graph=keep)
        assert_close(linear.logps, full_logps, ops=100)
        assert_close(linear.directional, columns.T @ tangent, ops=1e3)
        assert_close(linear.vjp(cotangent), columns @ cotangent, ops=1e3)
        assert_close(linear.vjp(-cotangent), -(columns @ cotangent),
                     ops=1e3)                             # after the kept graph: fresh
        assert_close(linear.jvp(tangent), columns.T @ tangent, ops=1e3)
        assert products.linearize(batch, keep_graph=keep).directional is None


_SLOW = pytest.mark.slow


@pytest.mark.parametrize("arch,subset", [
    ("gpt2", "last_block"), ("llama", "last_two"), ("qwen3", "one_norm"),
    ("llama", "final_norm"), pytest.param("gpt2", "final_norm", marks=_SLOW),
    pytest.param("gpt2", "last_two", marks=_SLOW), pytest.param("gpt2", "one_norm", marks=_SLOW),
    pytest.param("llama", "last_block", marks=_SLOW),
    pytest.param("llama", "one_norm", marks=_SLOW),
    pytest.param("qwen2", "last_block", marks=_SLOW),
    pytest.param("qwen2", "last_two", marks=_SLOW),
    pytest.param("qwen3", "last_block", marks=_SLOW),
])
def test_tail_products_match_explicit_columns(arch, subset):
    """3 blocks; the products start at the first trainable block and agree with the explicit
    Jacobian of the whole model (1e-8); the fused pass's primal is the full model's."""
    from offsets_fixtures import tiny_family

    model = tiny_family(arch, layers=3)
    blocks = BLOCKS[arch]
    first = {"last_block": 2, "last_two": 1, "one_norm": 1, "final_norm": 3}[subset]
    if subset == "final_norm":        # no block in the tail: it starts at the final norm
        final = "transformer.ln_f." if arch == "gpt2" else "model.norm."
        names = _trainable(model, lambda n: n.startswith(final))
    elif subset == "one_norm":
        norm = "ln_2" if arch == "gpt2" else "post_attention_layernorm"
        names = _trainable(model, lambda n: n == f"{blocks}.1.{norm}.weight")
    else:
        names = _trainable(model, lambda n: n.startswith(tuple(
            f"{blocks}.{i}." for i in range(first, 3))))
    batch = preference_batch(3, seed=17)
    products = ReferenceProducts(model)
    assert products.truncated and products.tail_plan.first == first
    _check_products(model, products, batch, names)
    full = ReferenceProducts(model, truncate=False)
    assert not full.truncated
    _check_linearize(products, batch, brute_force_columns(model, batch, names),
                     full.logps(batch))


@pytest.mark.parametrize("jvp_method", ["forward", pytest.param("double-vjp", marks=_SLOW)])
def test_tail_lora_linearize(jvp_method):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["layers.2.self_attn.q_proj",
                                                                "layers.2.self_attn.v_proj"],
                             lora_dropout=0.0, init_lora_weights=False)
    from offsets_fixtures import tiny_family

    model = peft.get_peft_model(tiny_family("llama", layers=3), config)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    products = ReferenceProducts(model, jvp_method=jvp_method)
    assert products.truncated and products.tail_plan.first == 2
    batch = preference_batch(2, seed=4)
    _check_linearize(products, batch, brute_force_columns(model, batch, names),
                     ReferenceProducts(model, truncate=False).logps(batch))


def test_tail_not_used_outside_the_blocks():
    model = tiny_gpt2("sdpa", layers=3)
    assert not ReferenceProducts(model).truncated                     # embeddings trainable
    names = _trainable(model, lambda n: n.startswith(("transformer.wte", "transformer.h.2.")))
    assert not ReferenceProducts(model, names).truncated
    names = _trainable(model, lambda n: n.startswith("transformer.h.2."))
    assert not ReferenceProducts(model, names, truncate=False).truncated


def test_tail_that_disagrees_with_the_model_falls_back():
    """A model whose forward does more than head(norm(blocks)) (here: logits × 2): the first
    batch's check fails, a warning says so, and the products are those of the real model."""
    model = tiny_gpt2("sdpa", layers=3)
    original = type(model).forward

    def scaled_forward(self, *args, **kwargs):
        outputs = original(self, *args, **kwargs)
        outputs.logits = 2 * outputs.logits
        return outputs

    model.forward = scaled_forward.__get__(model)
    names = _trainable(model, lambda n: n.startswith("transformer.h.2."))
    products = ReferenceProducts(model)
    assert products.truncated                                       # structure recognised
    batch = preference_batch(2, seed=8)
    with pytest.warns(RuntimeWarning, match="does not reproduce"):
        products.logps(batch)
    assert not products.truncated
    _check_products(model, products, batch, names)


def test_a_bf16_model_with_float32_outputs_keeps_its_tail():
    """accelerate's bf16 mixed precision wraps ``forward`` to return float32 logits, so the
    first batch's check compares a float32 full pass with a bf16 tail: the tolerance follows
    the parameters' dtype (bf16 round-off), and the products stay truncated."""
    model = tiny_gpt2("sdpa", layers=3).to(torch.bfloat16)
    original = type(model).forward

    def float32_forward(self, *args, **kwargs):
        outputs = original(self, *args, **kwargs)
        outputs.logits = outputs.logits.float()
        return outputs

    model.forward = float32_forward.__get__(model)
    _trainable(model, lambda n: n.startswith("transformer.h.2."))
    products = ReferenceProducts(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        products.logps(preference_batch(2, seed=8))
    assert products.truncated
