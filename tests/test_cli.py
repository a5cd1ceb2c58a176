"""The real CLI in a subprocess: end to end, and bad input answered in one line with exit code 2."""

import errno
import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "condense", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300)


def test_probe_then_show(tiny_gpt2, docs_jsonl, tmp_path):
    out = tmp_path / "run"
    p = run("probe", tiny_gpt2, "--corpus", docs_jsonl, "--num-seqs", 4, "--max-length", 32, "--layers", "0:4:2",
            "--out", out, "-q")
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in out.iterdir()) == ["heatmap.png", "histograms.npz", "layers.csv", "run.json"]
    meta = json.loads((out / "run.json").read_text())
    assert meta["settings"]["layers"] == "0:4:2" and meta["counts"]["sequences"] == 4
    s = run("show", out)
    assert s.returncode == 0 and "Spearman" in s.stdout and "mean_cos" in s.stdout
    assert "cross_mean_cos" in s.stdout and "isoscore" in s.stdout and "token sample:" in s.stdout
    assert meta["corpus_sample"]["k"] > 0 and meta["corpus_sample"]["texts"] == 4
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temp folder left


def test_default_out_folder(tiny_gpt2, docs_jsonl, tmp_path):
    p = run("probe", tiny_gpt2, "--corpus", docs_jsonl, "--num-seqs", 2, "--max-length", 16, "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "results" / "gpt2__docs.jsonl" / "layers.csv").exists()


BAD = [
    (["probe", "no-such-model-xyz", "--num-seqs", 2], "no-such-model-xyz"),
    (["probe", "TINY", "--layers", "99"], "layer 99 is out of range"),
    (["probe", "TINY", "--layers", "a:b"], "bad --layers 'a:b'"),
    (["probe", "TINY", "--num-seqs", 0], "bad --num-seqs 0"),
    (["probe", "TINY", "--max-length", -5], "bad --max-length -5"),
    (["probe", "TINY", "--batch-size", 0], "bad --batch-size 0"),
    (["probe", "TINY", "--corpus-sample", -1], "bad --corpus-sample -1: give a number of tokens >= 16"),
    (["probe", "TINY", "--corpus-sample", 8], "bad --corpus-sample 8"),
    (["probe", "TINY", "--corpus-sample", "lots"], "'lots' is not an integer or auto"),
    (["probe", "TINY", "--corpus", "EMPTY"], "no usable text"),
    (["probe", "TINY", "--corpus", "nonsense-preset"], "unknown corpus 'nonsense-preset'"),
    (["probe", "TINY", "--corpus", "imdb"], "cannot read corpus preset 'imdb'"),
    (["probe", "TINY", "--aggregate", "median"], "'median' is not one of"),
    (["probe", "TINY", "--sampler", "paper", "--shuffle"], "--shuffle goes with --sampler sequential"),
    (["probe", "NOTCKPT"], "is a folder but not a checkpoint"),
    (["probe", "TINY", "--out", "AFILE"], "is an existing file"),
    (["show", "NOTCKPT"], "is not a condense run folder"),
    (["probe", "gpt2"], "cannot find model 'gpt2' locally or on the Hugging Face hub"),
    (["probe", "TINY", "--corpus", "BLANKJSONL"], "has no usable text"),
    (["probe", "TINY", "--corpus", "NOFIELD"], "line 2 of"),
    (["probe", "TINY", "--corpus", "BROKEN"], "line 3 of"),
    (["probe", "TINY", "--out", "AFILE/sub"], "is not writable"),
    (["probe", "TINY", "--out", "/proc/condense-run"], "is not writable"),
    (["probe", "TINY", "--aggregate", "paper", "--corpus", "UNEVEN", "--max-length", "64"], "needs sequences of equal length"),
    (["probe", "TINY", "--device", "cuda"], "--device 'cuda' is not available here"),
    (["probe", "TINY", "--text-field", "body", "--corpus", "NOFIELD"], "no field 'body'"),
    (["show", "CORRUPT"], "has a corrupt file"),
    (["show", "OLDFORMAT"], "has result format 0"),
    (["compare", "CORRUPT", "--out", "OUTPNG"], "has a corrupt file"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(map(str, a[:3])) for a, _ in BAD])
def test_bad_input_one_line_exit_2(args, message, tiny_gpt2, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "notckpt").mkdir()
    (tmp_path / "notckpt" / "readme.md").write_text("x")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "blank.jsonl").write_text('{"text": " "}\n{"text": ""}\n')
    (tmp_path / "nofield.jsonl").write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    (tmp_path / "broken.jsonl").write_text('{"text": "fine"}\n\n{"text": "unterminated\n')
    (tmp_path / "uneven.txt").write_text(("word " * 200) + "\n\nshort tail")
    for name, mangle in (("corrupt", lambda f: (f / "histograms.npz").write_bytes(b"not a zip")),
                         ("oldformat", lambda f: (f / "run.json").write_text('{"format": 0}'))):
        folder = tmp_path / name
        folder.mkdir()
        for f in ("layers.csv", "histograms.npz", "run.json"):
            (folder / f).write_text({"layers.csv": "layer,mean_cos\n0,0.5\n", "run.json": '{"format": 1}'}.get(f, ""))
        mangle(folder)
    subs = {"TINY": tiny_gpt2, "EMPTY": tmp_path / "empty.txt", "NOTCKPT": tmp_path / "notckpt",
            "AFILE": tmp_path / "afile", "AFILE/sub": tmp_path / "afile" / "sub", "BLANKJSONL": tmp_path / "blank.jsonl",
            "NOFIELD": tmp_path / "nofield.jsonl", "BROKEN": tmp_path / "broken.jsonl", "UNEVEN": tmp_path / "uneven.txt",
            "CORRUPT": tmp_path / "corrupt", "OLDFORMAT": tmp_path / "oldformat", "OUTPNG": tmp_path / "o.png"}
    args = [subs.get(a, a) if isinstance(a, str) else a for a in args]
    if "--out" not in args and args[0] == "probe":
        args += ["--out", tmp_path / "out"]
    p = run(*args, "-q") if args[0] == "probe" else run(*args)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert message in lines[0] and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".out")]


# The storage refuses a write (full disk, quota, read-only file system): the same one line, exit 2,
# nothing half-written. The CLI runs in a subprocess whose writer raises the OSError a full disk gives.
INJECT = """
import errno, importlib, os, sys
module, attribute, code = sys.argv[1], sys.argv[2], int(sys.argv[3])
owner, name = attribute.rsplit(".", 1) if "." in attribute else ("", attribute)
target = importlib.import_module(module)
for part in filter(None, owner.split(".")):
    target = getattr(target, part)
def refuse(*args, **kwargs):
    raise OSError(code, os.strerror(code))
setattr(target, name, refuse)
sys.argv = ["condense", *sys.argv[4:]]
from condense.cli.app import main
main()
"""

FULL = [
    (["probe", "TINY", "--corpus", "CORPUS", "--num-seqs", "2", "--max-length", "16", "--out", "OUT"], "numpy", "savez", errno.ENOSPC, "OUT", "ENOSPC"),
    (["probe", "TINY", "--corpus", "CORPUS", "--num-seqs", "2", "--max-length", "16", "--out", "OUT"], "matplotlib.figure", "Figure.savefig", errno.EDQUOT, "OUT", "EDQUOT"),
    (["probe", "TINY", "--corpus", "CORPUS", "--num-seqs", "2", "--max-length", "16", "--out", "OUT"], "pathlib", "Path.write_text", errno.EROFS, "OUT", "EROFS"),
    (["plot", "RUN", "--out", "OUTPNG"], "matplotlib.figure", "Figure.savefig", errno.ENOSPC, "OUTPNG", "ENOSPC"),
    (["compare", "RUN", "RUN", "--out", "OUTPNG"], "matplotlib.figure", "Figure.savefig", errno.EDQUOT, "OUTPNG",
     "EDQUOT"),
    (["sweep", "SPEC", "--out", "OUT"], "numpy", "savez", errno.ENOSPC, "OUT/", "0 of 1 runs finished"),
    (["finetune", "TINY", "--corpus", "CORPUS", "--steps", "1", "--seq-len", "16", "--batch-size", "2",
      "--probe-every", "1", "--probe-seqs", "2", "--out", "OUT"], "pandas", "DataFrame.to_csv", errno.ENOSPC, "OUT",
     "ENOSPC"),
]


@pytest.mark.parametrize("args, module, attribute, code, named, message", FULL,
                         ids=[f"{a[0]}-{m}.{w}" for a, m, w, *_ in FULL])
def test_full_storage_one_line_exit_2(args, module, attribute, code, named, message, tiny_gpt2, docs_jsonl, tmp_path):
    run_folder = tmp_path / "inputs" / "run"
    made = run("probe", tiny_gpt2, "--corpus", docs_jsonl, "--num-seqs", 2, "--max-length", 16, "--out", run_folder,
               "-q")
    assert made.returncode == 0, made.stderr
    spec = tmp_path / "inputs" / "s.toml"
    spec.write_text(f'models = ["{tiny_gpt2}"]\ncorpora = ["{docs_jsonl}"]\n[settings]\nnum_seqs = 2\nmax_length = 16\n')
    outputs = tmp_path / "outputs"
    subs = {"TINY": tiny_gpt2, "RUN": run_folder, "SPEC": spec, "CORPUS": docs_jsonl, "OUT": outputs / "out",
            "OUTPNG": outputs / "fig.png"}
    argv = [str(subs.get(a, a)) for a in args]
    p = subprocess.run([sys.executable, "-c", INJECT, module, attribute, str(code), *argv, *(
        ["-q"] if args[0] in ("probe", "sweep", "finetune") else [])], capture_output=True, text=True, env=ENV,
        timeout=300)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    target = str(subs[named.rstrip("/")]) + ("/" if named.endswith("/") else "")
    assert f"cannot write '{target}" in lines[0] and message in lines[0], lines[0]
    assert not outputs.exists() or [f.name for f in outputs.rglob("*") if f.is_file() or f.name.startswith(".")] == []
