"""The GGUF conversion cache, on a tiny real GGUF file: parsed once, the same numbers through the cache
as from the GGUF itself, keyed by the file's identity, atomic under kills and concurrent loaders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import condense
from condense.errors import CondenseError
from condense.models import load_model, read_gguf_facts
from condense.models import gguf_cache
from condense.models.gguf_cache import convert_gguf, converted_files_folder, file_identity
from condense.models.gguf_header import read_gguf_header
from tests.gguf_files import write_tiny_llama_gguf

gguf = pytest.importorskip("gguf")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("CONDENSE_CACHE", str(folder))
    return folder


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_tiny_llama_gguf(tmp_path / "tiny.gguf")


def entries(cache: Path) -> list[str]:
    """Names in the files' part of the cache, locks left out."""
    root = cache / "converted" / "files"
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) if root.exists() else []


def test_the_header_reader_agrees_with_the_gguf_package(tiny):
    header, reader = read_gguf_header(tiny), gguf.GGUFReader(tiny)
    assert header.data_start == reader.data_offset
    assert [(t.name, t.ggml_type, t.elements, t.offset) for t in header.tensors] == [
        (t.name, int(t.tensor_type), int(t.n_elements), int(t.data_offset) - reader.data_offset) for t in reader.tensors]
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:  # arrays are stepped over, their lengths kept
            assert header.metadata[key] == len(field.data), key
        else:
            assert header.metadata[key] == field.contents(), key
    assert header.metadata["tokenizer.ggml.tokens"] == 265 and header.metadata["general.name"] == "Tiny Llama"
    facts = read_gguf_facts(tiny)
    assert facts["parameters"] == sum(int(t.n_elements) for t in reader.tensors)
    assert facts["tensor_types"] == {"F32": 5, "Q8_0": 15} and facts["quantization"] == "Q8_0"


def forbid_gguf_parsing(monkeypatch) -> None:
    """Make every GGUF parser transformers uses fail: what still loads, loads without parsing."""
    from transformers.integrations.gguf import reader as fast_reader

    def refuse(*args, **kwargs):
        raise AssertionError("the GGUF file was parsed again")

    monkeypatch.setattr(gguf, "GGUFReader", refuse)
    monkeypatch.setattr(fast_reader, "_mapped", refuse)


def test_the_first_load_converts_and_later_loads_read_the_cache(cache, tiny, monkeypatch):
    first = load_model(str(tiny))
    folder = Path(first.info["gguf_cache"])
    assert folder.parent == cache / "converted" / "files" and folder.name.startswith("tiny-float32-")
    assert {"config.json", "gguf.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in folder.iterdir()}
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in folder.iterdir())  # readable in a shared cache
    record = json.loads((folder / "gguf.json").read_text())
    assert record["dtype"] == "float32" and record["facts"] == read_gguf_facts(tiny)
    with monkeypatch.context() as patch:
        forbid_gguf_parsing(patch)
        second = load_model(str(tiny))
    assert second.info["gguf_cache"] == str(folder) and entries(cache) == [folder.name]
    for key in ("label", "quantization", "gguf_tensor_types", "resolved", "parameters", "num_layers"):
        assert second.info[key] == first.info[key], key
    assert second.info["quantization"] == "Q8_0" and second.info["resolved"] == str(tiny)
    ids = torch.tensor([first.tokenizer("the cat in the hat")["input_ids"]])
    with torch.inference_mode():
        a = first.model(input_ids=ids, output_hidden_states=True).hidden_states
        b = second.model(input_ids=ids, output_hidden_states=True).hidden_states
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_the_cache_holds_what_transformers_makes_of_the_gguf(cache, tiny):
    from transformers import AutoModel, AutoTokenizer

    direct = AutoModel.from_pretrained(tiny.parent, gguf_file=tiny.name, dtype=torch.float32)
    direct_tok = AutoTokenizer.from_pretrained(tiny.parent, gguf_file=tiny.name)
    cached = load_model(str(tiny))
    want, got = direct.state_dict(), cached.model.state_dict()
    assert set(want) == set(got) and all(torch.equal(want[k], got[k]) for k in want)
    assert all(got[k].dtype == torch.float32 for k in got)
    from pydoc_data.topics import topics

    for text in list(topics.values())[:40]:
        assert direct_tok(text)["input_ids"] == cached.tokenizer(text)["input_ids"]
    assert len(direct_tok) == len(cached.tokenizer) and direct_tok.eos_token == cached.tokenizer.eos_token


@pytest.mark.parametrize("tied", [True, False])
def test_training_loads_the_causal_lm_of_the_gguf_from_the_cache(cache, tmp_path, tied):
    from transformers import AutoModelForCausalLM

    from condense.training.model import load_causal_lm, resolve_causal_source

    path = write_tiny_llama_gguf(tmp_path / "lm.gguf", tied=tied)
    direct = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    loaded = load_causal_lm(resolve_causal_source(str(path)), torch.device("cpu"))
    assert Path(loaded.info["gguf_cache"]).parent == converted_files_folder()
    assert loaded.info["resolved"] == str(path) and loaded.model.training
    want, got = direct.state_dict(), loaded.model.state_dict()
    assert set(want) == set(got) and all(torch.equal(want[k], got[k]) for k in want)
    head, embeddings = loaded.model.lm_head.weight, loaded.model.get_input_embeddings().weight
    assert (head.data_ptr() == embeddings.data_ptr()) == tied  # tied stays tied, an own head stays its own


def test_a_probe_through_the_cache_writes_the_same_layers_csv_as_one_of_the_gguf(cache, tiny, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    settings = dict(num_seqs=3, max_length=48, layers="all", spectrum_seqs=2, quiet=True)
    condense.probe(str(tiny), **settings).save(tmp_path / "first", heatmap=False)  # converts
    condense.probe(str(tiny), **settings).save(tmp_path / "cached", heatmap=False)  # reads the cache
    model = AutoModel.from_pretrained(tiny.parent, gguf_file=tiny.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny.parent, gguf_file=tiny.name)
    condense.probe(model, tokenizer=tokenizer, **settings).save(tmp_path / "gguf", heatmap=False)
    reference = (tmp_path / "gguf" / "layers.csv").read_bytes()
    assert (tmp_path / "first" / "layers.csv").read_bytes() == reference
    assert (tmp_path / "cached" / "layers.csv").read_bytes() == reference


def test_the_key_follows_the_files_contents_and_the_software(cache, tiny, monkeypatch):
    first = convert_gguf(tiny)
    assert first.converted and not convert_gguf(tiny).converted
    os.utime(tiny, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched: maybe changed
    touched = convert_gguf(tiny)
    assert touched.converted and touched.folder != first.folder
    (tiny.parent / "other").mkdir()
    other = write_tiny_llama_gguf(tiny.parent / "other" / "tiny.gguf", seed=1)  # same name and size, other weights
    os.utime(other, ns=(tiny.stat().st_atime_ns, tiny.stat().st_mtime_ns))
    assert other.stat().st_size == tiny.stat().st_size
    assert file_identity(other) != file_identity(tiny) and convert_gguf(other).folder != touched.folder
    monkeypatch.setattr(gguf_cache, "_software", lambda: {"format": gguf_cache.FORMAT, "transformers": "99.0"})
    assert convert_gguf(tiny).folder != touched.folder  # an upgrade converts again
    assert len(entries(cache)) == 4


def test_a_known_sha256_keys_an_alias_and_older_entries_of_it_go(cache, tiny, monkeypatch):
    entry = convert_gguf(tiny, alias="fake-alias", sha256="ab" * 32)
    assert entry.folder.parent == cache / "converted" / "fake-alias"
    os.utime(tiny, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert not convert_gguf(tiny, alias="fake-alias", sha256="ab" * 32).converted  # the table's sha256 is the key
    monkeypatch.setattr(gguf_cache, "_software", lambda: {"format": gguf_cache.FORMAT, "transformers": "99.0"})
    newer = convert_gguf(tiny, alias="fake-alias", sha256="ab" * 32)
    assert newer.converted and [p.name for p in entry.folder.parent.iterdir() if p.is_dir()] == [newer.folder.name]


def test_each_dtype_has_its_own_entry_in_that_dtype(cache, tiny):
    half = load_model(str(tiny), dtype="bfloat16")
    assert half.info["dtype"] == "bfloat16" and Path(half.info["gguf_cache"]).name.startswith("tiny-bfloat16-")
    from safetensors import safe_open

    with safe_open(Path(half.info["gguf_cache"]) / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    full = load_model(str(tiny))
    assert full.info["dtype"] == "float32" and len(entries(cache)) == 2


def test_a_damaged_entry_is_converted_again(cache, tiny):
    entry = convert_gguf(tiny)
    (entry.folder / "model.safetensors").unlink()
    again = convert_gguf(tiny)
    assert again.converted and again.folder == entry.folder and (entry.folder / "model.safetensors").is_file()


def test_an_interrupted_conversion_leaves_nothing_and_releases_the_lock(cache, tiny, monkeypatch):
    import safetensors.torch

    def interrupted(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(safetensors.torch, "save_file", interrupted)
        with pytest.raises(KeyboardInterrupt):
            convert_gguf(tiny)
    assert entries(cache) == []
    assert convert_gguf(tiny).converted and len(entries(cache)) == 1


KILLED = """
import sys, time
from pathlib import Path
import safetensors.torch
from condense.models.gguf_cache import convert_gguf

def stalled(tensors, filename, metadata=None):
    Path(filename).write_bytes(b"half")
    Path(sys.argv[2]).write_text("writing")
    time.sleep(600)

safetensors.torch.save_file = stalled
convert_gguf(sys.argv[1])
"""


def test_a_killed_converters_partial_folder_is_never_taken_for_complete(cache, tiny, tmp_path):
    marker = tmp_path / "writing"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONDENSE_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tiny), str(marker)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():  # the event: the converter is writing the weights
            assert proc.poll() is None and time.monotonic() < deadline, "the converter stopped early"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = entries(cache)
    assert len(left) == 1 and ".partial-" in left[0]  # only the partial folder: nothing looks complete
    entry = convert_gguf(tiny)
    assert entry.converted and entries(cache) == [entry.folder.name]  # and the next conversion removed it


CONCURRENT = """
import sys
from pathlib import Path
import filelock, safetensors.torch
from condense.models.gguf_cache import convert_gguf

acquire, save = filelock.FileLock.acquire, safetensors.torch.save_file
def waiting(self, *args, **kwargs):
    with open(sys.argv[2], "a") as log:
        log.write("waiting\\n")
    return acquire(self, *args, **kwargs)

def counted(tensors, filename, metadata=None):
    with open(sys.argv[3], "a") as log:
        log.write("converted\\n")
    save(tensors, filename, metadata=metadata)

filelock.FileLock.acquire, safetensors.torch.save_file = waiting, counted
print(convert_gguf(sys.argv[1]).folder)
"""


def test_concurrent_loaders_convert_once(cache, tiny, tmp_path):
    from filelock import FileLock

    entry = gguf_cache.entry_folder(tiny.resolve(), "float32", file_identity(tiny.resolve()))
    waits, conversions = tmp_path / "waits.log", tmp_path / "conversions.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONDENSE_CACHE": str(cache)}
    entry.parent.mkdir(parents=True)
    held = FileLock(str(entry.parent / f".{entry.name}.lock"))
    held.acquire()  # both loaders start while the entry is locked
    try:
        procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tiny), str(waits), str(conversions)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        deadline = time.monotonic() + 240
        while not (waits.exists() and len(waits.read_text().split()) == 2):  # the event: both wait for the lock
            assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, "a loader did not wait"
            time.sleep(0.05)
    finally:
        held.release()
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    assert {o[0].strip() for o in outs} == {str(entry)}
    assert conversions.read_text().splitlines() == ["converted"]  # the second found the first's entry
    assert entries(cache) == [entry.name]


def test_too_little_disk_space_is_one_line_before_converting(cache, tiny, monkeypatch):
    monkeypatch.setattr(gguf_cache.shutil, "disk_usage", lambda p: type("U", (), {"free": 10})())
    with pytest.raises(CondenseError, match=r"converting 'tiny.gguf' needs \d+ MB in .* only 0 MB are free; .*CONDENSE_CACHE"):
        convert_gguf(tiny)
    assert entries(cache) == []


def test_a_gguf_transformers_cannot_read_is_one_line_and_leaves_nothing(cache, tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), "no-such-arch")
    writer.add_tensor("w", torch.zeros(4, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CondenseError, match=r"cannot make a model config of .*odd.gguf.*may not support"):
        load_model(str(tmp_path / "odd.gguf"))
    assert entries(cache) == []


def test_a_gguf_from_the_hub_cache_gets_the_same_conversion(cache, tiny, tmp_path, monkeypatch):
    """ORG/REPO/FILE.gguf resolves through huggingface_hub's own cache (offline here), then converts once."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--someorg--tiny-gguf"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    blob = repo / "blobs" / ("ab" * 32)
    blob.parent.mkdir()
    blob.write_bytes(tiny.read_bytes())
    (repo / "snapshots" / commit / "tiny.gguf").symlink_to(blob)  # as the hub client lays its cache out
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    first = load_model("someorg/tiny-gguf/tiny.gguf")
    assert first.info["hub_id"] == "someorg/tiny-gguf" and first.info["quantization"] == "Q8_0"
    assert Path(first.info["gguf_cache"]).parent == converted_files_folder()
    assert Path(first.info["gguf_cache"]).name.startswith("tiny-float32-")  # named after the file, not its blob
    with monkeypatch.context() as patch:
        forbid_gguf_parsing(patch)
        second = load_model("someorg/tiny-gguf/tiny.gguf")
    assert second.info["gguf_cache"] == first.info["gguf_cache"] and len(entries(cache)) == 1
    with pytest.raises(CondenseError, match=r"cannot find model 'someorg/tiny-gguf/other.gguf' locally or on the Hugging Face hub"):
        load_model("someorg/tiny-gguf/other.gguf")
