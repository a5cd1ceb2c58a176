"""What the test hub serves: tiny random GPT-2 models and small fixtures of the paper's corpora.

Models: GPT-2 architecture, 512 positions (the paper's text length), width 16, with a byte-level
BPE tokenizer of 400 tokens trained here on the standard library's pydoc text (GPT-2's kind of
tokenizer, no special tokens added), about 100 KB each. Corpora: parquet files written with
pyarrow under the real repositories' ids, configs, splits, file layout (a README with a YAML
``configs:`` block) and column names and types, with English prose cut from pydoc:

- ``Salesforce/wikitext`` ``wikitext-103-v1``: ``text``, rows as in WikiText (empty strings,
  `` = Heading = `` lines, paragraphs with a leading space and a trailing newline);
- ``qiaojin/PubMedQA`` ``pqa_labeled``: ``pubid``, ``question``, ``context`` (a struct of lists
  ``contexts``, ``labels``, ``meshes``), ``long_answer``, ``final_decision``;
- ``stanfordnlp/imdb`` ``plain_text``: ``text``, ``label`` (a class label);
- ``rajpurkar/squad`` ``plain_text``: ``id``, ``title``, ``context``, ``question``, ``answers``
  (a struct of lists), each context repeated once per question, as in SQuAD.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import transformers

from tests.hub_server import publish

__all__ = ["GPT2_IDS", "HubFacts", "tiny_tokenizer", "tiny_gpt2", "corpus_tables", "publish_corpora", "build_hub",
           "hub_env", "run_condense", "by_command", "manifest", "words"]

ROOT = Path(__file__).resolve().parents[1]

GPT2_IDS = ["openai-community/gpt2", "openai-community/gpt2-medium", "openai-community/gpt2-large",
            "openai-community/gpt2-xl"]


@functools.lru_cache(maxsize=1)
def words() -> list[str]:
    """The words of the standard library's pydoc topics, in order (about 80,000)."""
    from pydoc_data.topics import topics

    return re.sub(r"\s+", " ", " ".join(topics.values())).split(" ")


def tiny_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of 400 tokens (GPT-2's kind), trained on pydoc text."""
    from pydoc_data.topics import topics
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(topics.values()), trainer)
    return transformers.GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                          unk_token="<|endoftext|>", model_max_length=512)


def tiny_gpt2(folder: Path, tokenizer, seed: int = 0, layers: int = 2) -> Path:
    """Save a random GPT-2 (``layers`` blocks, weights drawn after ``torch.manual_seed(seed)``)
    and ``tokenizer`` as a checkpoint folder."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=16, n_layer=layers, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _chunks(n: int, size: int, offset: int = 0) -> list[str]:
    """``n`` passages of ``size`` words each (about; sizes vary by row), cut from pydoc text."""
    ws = words()
    out, at = [], offset
    for i in range(n):
        length = size // 2 + (i * 37) % size
        out.append(" ".join(ws[(at + k) % len(ws)] for k in range(length)))
        at += length
    return out


def corpus_tables() -> dict[str, tuple[str, str, pa.Table]]:
    """{preset: (dataset id, config, train table)} with the real datasets' columns and types."""
    # WikiText-103: articles of empty rows, " = Heading = " lines and paragraphs
    wiki, paragraphs = [], iter(_chunks(700, 120))
    for article in range(100):
        wiki += ["", f" = Article {article} = \n", ""]
        for section in range(2):
            if section:
                wiki += [f" = = Section {section} = = \n", ""]
            wiki += [f" {next(paragraphs)} \n" for _ in range(3)]
    wikitext = pa.table({"text": pa.array(wiki, pa.string())})

    answers, contexts = _chunks(600, 70, 1000), _chunks(1200, 25, 5000)
    context_type = pa.struct([("contexts", pa.list_(pa.string())), ("labels", pa.list_(pa.string())),
                              ("meshes", pa.list_(pa.string()))])
    pubmed = pa.table({
        "pubid": pa.array(range(10_000, 10_600), pa.int32()),
        "question": pa.array([f"Does finding {i} hold?" for i in range(600)], pa.string()),
        "context": pa.array([{"contexts": contexts[2 * i:2 * i + 2], "labels": ["BACKGROUND", "RESULTS"],
                              "meshes": ["Humans", "Models, Theoretical"]} for i in range(600)], context_type),
        "long_answer": pa.array(answers, pa.string()),
        "final_decision": pa.array([("yes", "no", "maybe")[i % 3] for i in range(600)], pa.string()),
    })
    imdb = pa.table({"text": pa.array(_chunks(300, 230, 9000), pa.string()),
                     "label": pa.array([i % 2 for i in range(300)], pa.int64())})
    paragraphs = _chunks(100, 120, 20_000)
    answer_type = pa.struct([("text", pa.list_(pa.string())), ("answer_start", pa.list_(pa.int32()))])
    squad = pa.table({
        "id": pa.array([f"{i:024x}" for i in range(400)], pa.string()),
        "title": pa.array([f"Topic_{i // 4}" for i in range(400)], pa.string()),
        "context": pa.array([paragraphs[i // 4] for i in range(400)], pa.string()),
        "question": pa.array([f"What is question {i}?" for i in range(400)], pa.string()),
        "answers": pa.array([{"text": [paragraphs[i // 4].split()[i % 4]], "answer_start": [0]} for i in range(400)],
                            answer_type),
    })
    return {"wikipedia": ("Salesforce/wikitext", "wikitext-103-v1", wikitext),
            "pubmed": ("qiaojin/PubMedQA", "pqa_labeled", pubmed),
            "imdb": ("stanfordnlp/imdb", "plain_text", imdb),
            "squad": ("rajpurkar/squad", "plain_text", squad)}


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=128)  # several row groups: streaming reads them by byte ranges
    return buf.getvalue()


def publish_corpora(root: Path) -> dict[str, pa.Table]:
    """Publish the four corpus fixtures under their hub ids (branch ``main``); {preset: train table}."""
    tables = {}
    for preset, (repo_id, config, table) in corpus_tables().items():
        heldout = table.slice(0, 8)
        readme = "\n".join(["---", "configs:", f"- config_name: {config}", "  data_files:",
                            "  - split: train", f"    path: {config}/train-*",
                            "  - split: test", f"    path: {config}/test-*", "---",
                            f"# {repo_id} (test fixture)", ""])
        files = {"README.md": readme.encode(),
                 f"{config}/train-00000-of-00001.parquet": _parquet(table),
                 f"{config}/test-00000-of-00001.parquet": _parquet(heldout),
                 ".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"}
        publish(root, "dataset", repo_id, files, ["main", "refs/convert/parquet"])
        tables[preset] = table
    return tables


def manifest(folder: Path) -> dict:
    """A run folder's run.json."""
    return json.loads((Path(folder) / "run.json").read_text())


@dataclass
class HubFacts:
    """What :func:`build_hub` published: commits by ref, the tokenizer, the corpus tables."""

    commits: dict[str, str] = field(default_factory=dict)  # "<repo id>@<ref>" -> commit sha
    folders: dict[str, Path] = field(default_factory=dict)  # "<gpt2's id>@main" and "@v1.0" -> the checkpoints
    tokenizer: object = None
    tables: dict = field(default_factory=dict)


def build_hub(root: Path) -> HubFacts:
    """Publish every repo the hub tests use into the server folder ``root``.

    ``openai-community/gpt2``: branch ``main`` (seed 0) and, with other weights (seed 1), tag
    ``v1.0`` and branch ``release/v1``; ``-medium``, ``-large``, ``-xl``: seeds 2, 3, 4;
    ``acme/gated``: gated; ``flaky/five-hundred`` and ``flaky/dropped``: copies of gpt2's main the
    tests make fail; and the four corpora.
    """
    facts = HubFacts(tokenizer=tiny_tokenizer())
    folders = root.parent / f"{root.name}-checkpoints"
    main = tiny_gpt2(folders / "gpt2-main", facts.tokenizer, seed=0)
    other = tiny_gpt2(folders / "gpt2-v1", facts.tokenizer, seed=1)
    gpt2 = GPT2_IDS[0]
    facts.folders = {f"{gpt2}@main": main, f"{gpt2}@v1.0": other}
    facts.commits[f"{gpt2}@main"] = publish(root, "model", gpt2, main, ["main"])
    facts.commits[f"{gpt2}@v1.0"] = publish(root, "model", gpt2, other, ["v1.0", "release/v1"])
    for k, repo in enumerate(GPT2_IDS[1:], start=1):
        facts.commits[f"{repo}@main"] = publish(root, "model", repo, tiny_gpt2(folders / repo, facts.tokenizer,
                                                                                 seed=1 + k), ["main"])
    publish(root, "model", "acme/gated", main, ["main"], gated="manual")
    for repo in ("flaky/five-hundred", "flaky/dropped"):
        publish(root, "model", repo, main, ["main"])
    facts.tables = publish_corpora(root)
    return facts


def hub_env(endpoint: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a condense process using the hub at ``endpoint`` with the cache ``home``:
    CI's HF_HUB_OFFLINE / HF_DATASETS_OFFLINE and any token removed (``extra`` may set them)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN",
                        "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE")}
    env.update({"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg",
                "OMP_NUM_THREADS": "1"})  # tiny models: a second thread only waits (and CI's cores are shared)
    env.update(extra)
    return env


def run_condense(commands: list[list], env: dict[str, str], work: Path, timeout: float = 300) -> list[dict]:
    """Run ``condense`` command lines in one fresh process (:mod:`tests.cli_driver`); one result
    dict per command (rc, seconds, stdout, stderr)."""
    work.mkdir(parents=True, exist_ok=True)
    todo, done = work / "commands.json", work / "results.json"
    todo.write_text(json.dumps([[str(a) for a in argv] for argv in commands]))
    proc = subprocess.run([sys.executable, "-m", "tests.cli_driver", str(todo), str(done)], env=env, cwd=work,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0 and done.exists(), proc.stderr[-3000:]
    return json.loads(done.read_text())


def by_command(requests: list[tuple], count: int) -> list[list[tuple]]:
    """The server's request log split at the driver's ``/api/__mark__/<i>`` requests: the requests
    of each of the ``count`` commands."""
    parts: list[list[tuple]] = [[] for _ in range(count)]
    current = None
    for method, path, byte_range in requests:
        if path.startswith("/api/__mark__/"):
            current = int(path.rsplit("/", 1)[1])
        elif current is not None:
            parts[current].append((method, path, byte_range))
    return parts
