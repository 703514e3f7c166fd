"""Local stand-ins for the Hugging Face hub ids that TRL's DPO tests load, built offline.

:func:`build_standins` writes, under ``root/trl-internal-testing/``:

* ``tiny-<Architecture>`` model folders: random-init models of the architectures TRL's tests
  name (hidden size 16, 2 layers, a few experts where the architecture has them), each with
  our tokenizer: a byte-level BPE of :data:`VOCAB_SIZE` entries trained on the rows below,
  ``<|im_end|>`` as end-of-sequence, ``<|endoftext|>`` as padding and a small chat template
  that renders roles, tool calls, tools and a ``thinking`` field;
* ``tiny-RemoteForCausalLM``: a Qwen2 model whose config points, through ``auto_map``, at
  modeling code of our own in the folder (so that loading it needs ``trust_remote_code``);
* the datasets ``zen`` (the preference configs: standard, conversational, implicit-prompt
  and unpaired; ``train`` and ``test`` splits), ``harmony`` and ``toolcall`` (``preference``
  config) and ``zen-image`` (``conversational_preference`` with small solid-colour images), as
  parquet files with a README that declares the configs, in TRL's column schemas.

Every row is written here. ``from_pretrained("trl-internal-testing/<name>")`` and
``load_dataset("trl-internal-testing/<name>", config)`` then resolve to these folders when the
current directory is ``root``. Vision-language models are not stood in.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ORG = "trl-internal-testing"
VOCAB_SIZE = 512
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

CHAT_TEMPLATE = (
    "{%- if tools -%}{{ '<|im_start|>system\\nTools: ' + (tools | tojson) + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message.thinking -%}{{ '<think>' + message.thinking + '</think>' }}{%- endif -%}"
    "{%- if message.content -%}{{ message.content }}{%- endif -%}"
    "{%- if message.tool_calls -%}{%- for call in message.tool_calls -%}"
    "{{ '<tool_call>' + (call.function | tojson) + '</tool_call>' }}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# (prompt, chosen, rejected): our own rows. 17 train rows make 3 steps an epoch at TRL's
# batch size 8, as in the hub's set, so tests that index the log history find the same rows.
ROWS = [
    ("Water freezes at", " zero degrees Celsius.", " the sound of a bell."),
    ("The sun rises in the", " east.", " cupboard."),
    ("A week has", " seven days.", " blue corners."),
    ("Bees make", " honey.", " bicycles."),
    ("The opposite of cold is", " hot.", " Tuesday."),
    ("A triangle has", " three sides.", " a long memory."),
    ("Plants need light to", " grow.", " whistle."),
    ("Two plus two is", " four.", " a river."),
    ("Fish live in", " water.", " envelopes."),
    ("Snow is usually", " white.", " loud."),
    ("The moon orbits the", " Earth.", " kettle."),
    ("A bicycle has", " two wheels.", " a quiet opinion."),
    ("Ice is frozen", " water.", " music."),
    ("We read books with our", " eyes.", " elbows of glass."),
    ("A year has", " twelve months.", " one spoon."),
    ("Rain falls from", " clouds.", " pockets."),
    ("Cats like to", " sleep in the sun.", " solve tax forms."),
    # test split
    ("A clock tells the", " time.", " weather of tomorrow."),
    ("Birds can", " fly.", " knit winter roads."),
]
N_TRAIN = 17
QUESTIONS = {  # conversational rows ask the prompt as a question
    row[0]: f"Complete the sentence: {row[0]} ..." for row in ROWS
}

# name -> (transformers config class, extra config keys); tiny sizes throughout.
ARCHITECTURES = {
    "tiny-Qwen2ForCausalLM-2.5": ("Qwen2Config", {}),
    "tiny-Cohere2ForCausalLM": ("Cohere2Config", {"sliding_window": 8}),
    "tiny-Glm4MoeForCausalLM": ("Glm4MoeConfig", {
        "moe_intermediate_size": 16, "n_routed_experts": 4, "num_experts_per_tok": 2,
        "n_shared_experts": 1, "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1,
        "head_dim": 4}),
    "tiny-GptOssForCausalLM": ("GptOssConfig", {
        "head_dim": 4, "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 8}),
    "tiny-Qwen3MoeForCausalLM": ("Qwen3MoeConfig", {
        "moe_intermediate_size": 16, "num_experts": 4, "num_experts_per_tok": 2,
        "head_dim": 4}),
    "tiny-NemotronHForCausalLM-nano": ("NemotronHConfig", {
        "hybrid_override_pattern": "M*", "mamba_num_heads": 4, "mamba_head_dim": 4,
        "ssm_state_size": 8, "n_groups": 1, "head_dim": 4}),
    "tiny-Olmo3ForCausalLM": ("Olmo3Config", {"sliding_window": 8}),
    "tiny-Lfm2ForCausalLM": ("Lfm2Config", {"layer_types": ["conv", "full_attention"]}),
    "tiny-Lfm2ForCausalLM-2.5": ("Lfm2Config", {"layer_types": ["conv", "full_attention"]}),
}
COMMON = {"hidden_size": 16, "num_attention_heads": 4, "num_key_value_heads": 2,
          "num_hidden_layers": 2, "intermediate_size": 32, "max_position_embeddings": 1024}

REMOTE = "tiny-RemoteForCausalLM"
REMOTE_CONFIG_CODE = '''from transformers import Qwen2Config


class RemoteConfig(Qwen2Config):
    model_type = "remote"
'''
REMOTE_MODEL_CODE = '''from transformers import Qwen2ForCausalLM

from .configuration_remote import RemoteConfig


class RemoteForCausalLM(Qwen2ForCausalLM):
    config_class = RemoteConfig
'''


# ---- rows ------------------------------------------------------------------------------------

def _user(text):
    return [{"role": "user", "content": text}]


def _assistant(text):
    return [{"role": "assistant", "content": text.strip()}]


def zen_configs() -> dict[str, tuple[list[dict], list[dict]]]:
    """``{config name: (train rows, test rows)}`` in TRL's preference schemas."""
    def build(make):
        rows = [make(*row) for row in ROWS]
        return rows[:N_TRAIN], rows[N_TRAIN:]

    def unpaired(rows):
        out = []
        for row in rows:
            out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
            out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
        return out

    standard = build(lambda p, c, r: {"prompt": p, "chosen": c, "rejected": r})
    return {
        "standard_preference": standard,
        "conversational_preference": build(lambda p, c, r: {
            "prompt": _user(QUESTIONS[p]), "chosen": _assistant(c), "rejected": _assistant(r)}),
        "standard_implicit_prompt_preference": build(lambda p, c, r: {
            "chosen": p + c, "rejected": p + r}),
        "conversational_implicit_prompt_preference": build(lambda p, c, r: {
            "chosen": _user(QUESTIONS[p]) + _assistant(c),
            "rejected": _user(QUESTIONS[p]) + _assistant(r)}),
        "standard_unpaired_preference": (unpaired(standard[0]), unpaired(standard[1])),
    }


def harmony_rows() -> list[dict]:
    """GPT-OSS style rows: a developer message, assistant turns with a ``thinking`` field."""
    return [{"prompt": [{"role": "developer", "content": "Answer briefly."}]
             + _user(QUESTIONS[p]),
             "chosen": [{"role": "assistant", "thinking": "A plain fact.", "content": c.strip()}],
             "rejected": [{"role": "assistant", "thinking": "Anything goes.",
                           "content": r.strip()}]}
            for p, c, r in ROWS[:N_TRAIN]]


def toolcall_rows() -> list[dict]:
    """Rows whose chosen answer calls a tool (``tools`` holds the schema, as JSON text)."""
    tools = json.dumps([{"type": "function", "function": {
        "name": "lookup", "description": "Look a fact up.",
        "parameters": {"type": "object", "properties": {"topic": {"type": "string"}},
                       "required": ["topic"]}}}])
    return [{"prompt": _user(QUESTIONS[p]),
             "chosen": [{"role": "assistant", "content": "",
                         "tool_calls": [{"type": "function", "function": {
                             "name": "lookup", "arguments": {"topic": p}}}]}],
             "rejected": _assistant(r),
             "tools": tools}
            for p, c, r in ROWS[:N_TRAIN]]


def image_rows() -> list[dict]:
    """``zen-image``: a user turn with one image (a small solid colour) and a question."""
    from PIL import Image

    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    rows = []
    for (p, c, r), colour in zip(ROWS, colours):
        rows.append({
            "images": [Image.new("RGB", (16, 16), colour)],
            "prompt": [{"role": "user", "content": [{"type": "image"},
                                                    {"type": "text", "text": QUESTIONS[p]}]}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": c.strip()}]}],
            "rejected": [{"role": "assistant",
                          "content": [{"type": "text", "text": r.strip()}]}],
        })
    return rows


def corpus() -> list[str]:
    """The text the tokenizer is trained on: every row, plain and in the chat markup."""
    texts = []
    for p, c, r in ROWS:
        texts += [p + c, p + r, QUESTIONS[p], f"<|im_start|>user\n{QUESTIONS[p]}<|im_end|>\n"
                  f"<|im_start|>assistant\n{c.strip()}<|im_end|>\n"]
    texts += ["<|im_start|>system\nTools: lookup topic<|im_end|>\n<tool_call></tool_call>",
              "<think>A plain fact.</think> Answer briefly. developer"]
    return texts


# ---- writing ---------------------------------------------------------------------------------

def build_tokenizer():
    """Our byte-level BPE tokenizer, as a ``PreTrainedTokenizerFast`` with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _config(class_name: str, extra: dict, tokenizer):
    import transformers

    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
           "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.eos_token_id}
    return getattr(transformers, class_name)(**COMMON, **ids, **extra)


def write_model(folder: Path, class_name: str, extra: dict, tokenizer, seed: int = 0) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(class_name, extra, tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def write_remote_model(folder: Path, tokenizer) -> None:
    """A Qwen2 model saved under a config that names our own code through ``auto_map``."""
    write_model(folder, "Qwen2Config", {}, tokenizer)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config.update(model_type="remote", architectures=["RemoteForCausalLM"], auto_map={
        "AutoConfig": "configuration_remote.RemoteConfig",
        "AutoModelForCausalLM": "modeling_remote.RemoteForCausalLM"})
    config_file.write_text(json.dumps(config, indent=2))
    (folder / "configuration_remote.py").write_text(REMOTE_CONFIG_CODE)
    (folder / "modeling_remote.py").write_text(REMOTE_MODEL_CODE)


def write_dataset(folder: Path, configs: dict[str, dict[str, list[dict]]]) -> None:
    """Parquet files per config and split, and a README whose YAML header declares them."""
    from datasets import Dataset

    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        for split, rows in splits.items():
            path = f"{name}/{split}.parquet"
            (folder / name).mkdir(parents=True, exist_ok=True)
            Dataset.from_list(rows).to_parquet(str(folder / path))
            lines += [f"  - split: {split}", f"    path: {path}"]
    lines += ["---", "", "Stand-in written by benchmarks/trl_standins.py (our own rows).", ""]
    (folder / "README.md").write_text("\n".join(lines))


def build_standins(root: Path, rebuild: bool = False) -> Path:
    """Write every stand-in under ``root/trl-internal-testing`` (kept when already complete);
    return that folder."""
    base = Path(root) / ORG
    done = base / ".complete"
    if done.exists() and not rebuild:
        return base
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    tokenizer = build_tokenizer()
    for name, (class_name, extra) in ARCHITECTURES.items():
        write_model(base / name, class_name, extra, tokenizer)
    write_remote_model(base / REMOTE, tokenizer)
    write_dataset(base / "zen", {name: {"train": train, "test": test}
                                 for name, (train, test) in zen_configs().items()})
    write_dataset(base / "harmony", {"preference": {"train": harmony_rows()}})
    write_dataset(base / "toolcall", {"preference": {"train": toolcall_rows()}})
    write_dataset(base / "zen-image", {"conversational_preference": {"train": image_rows()}})
    done.write_text("complete\n")
    return base
