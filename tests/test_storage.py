"""A full disk, an exceeded quota, a read-only file system or a file-size limit while writing: one line
naming the target and the storage problem, exit code 2, nothing half-written, a replaced run kept.

Deterministic in-process tests make a writer raise the OSError a full disk gives; real ones write under
a file-size limit (RLIMIT_FSIZE, any Linux) and into a tiny tmpfs (a user namespace, where allowed)."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.figure
import numpy as np
import pandas as pd
import pytest
import torch

from condense.api import save_figure
from condense.cli.app import main
from condense.errors import CondenseError
from condense.probing.checkpoint import checkpoint_path_for, load_checkpoint, save_checkpoint
from condense.results import RESULT_FORMAT, ProbeResult
from condense.results.atomic import StorageError, atomic_file, atomic_folder, storage_error
from condense.sweep import load_spec, run_sweep
from tests.test_cli import ENV

CODES = {errno.ENOSPC: "ENOSPC", errno.EDQUOT: "EDQUOT", errno.EROFS: "EROFS", errno.EFBIG: "EFBIG"}


def refuse(code=errno.ENOSPC, after_bytes: bytes = b""):
    """A stand-in writer that writes ``after_bytes`` to its target first (a partial file), then fails."""

    def writer(*args, **kwargs):
        target = next((a for a in args if isinstance(a, (str, os.PathLike)) or hasattr(a, "write")), None)
        if after_bytes and target is not None:
            if hasattr(target, "write"):
                target.write(after_bytes)
            else:
                with open(target, "wb") as f:
                    f.write(after_bytes)
        raise OSError(code, os.strerror(code))

    return writer


def small_result(model="m") -> ProbeResult:
    layers = pd.DataFrame({"layer": [0, 1, 2], "layer_fraction": [0.0, 0.5, 1.0], "mean_cos": [0.1, 0.2, 0.3],
                           "std_cos": [0.1, 0.1, 0.1], "n_tokens": [10, 10, 10]})
    trend = {"spearman": 1.0, "kendall": 1.0}
    return ProbeResult(layers, np.full((3, 128), 0.5), trend, {"format": RESULT_FORMAT, "model": model, "trend": trend})


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("code", list(CODES))
@pytest.mark.parametrize("writer", ["numpy.savez", "to_csv", "savefig"])
def test_run_folder_write_fails_in_one_line_and_leaves_nothing(tmp_path, monkeypatch, code, writer):
    target = {"numpy.savez": (np, "savez"), "to_csv": (pd.DataFrame, "to_csv"),
              "savefig": (matplotlib.figure.Figure, "savefig")}[writer]
    monkeypatch.setattr(*target, refuse(code, after_bytes=b"partial"))
    with pytest.raises(StorageError) as info:
        small_result().save(tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message and repr(str(tmp_path / "run")) in message and CODES[code] in message
    assert info.value.errno == code and ".partial" not in message
    assert leftovers(tmp_path) == []


def test_replacing_a_run_on_a_full_disk_keeps_the_old_one(tmp_path, monkeypatch):
    small_result("old").save(tmp_path / "run", heatmap=False)
    before = {f.name: f.read_bytes() for f in (tmp_path / "run").iterdir()}
    monkeypatch.setattr(np, "savez", refuse())
    with pytest.raises(StorageError):
        small_result("new").save(tmp_path / "run", heatmap=False)
    assert leftovers(tmp_path) == ["run"]
    assert {f.name: f.read_bytes() for f in (tmp_path / "run").iterdir()} == before


def test_nested_writer_is_reported_with_the_outer_target(tmp_path, monkeypatch):
    """A finetune folder holds probe run folders: a full disk inside names the folder the user gave."""
    monkeypatch.setattr(np, "savez", refuse())
    with pytest.raises(StorageError) as info:
        with atomic_folder(tmp_path / "ft") as tmp:
            small_result().save(tmp / "probes" / "step_000000", heatmap=False)
    assert info.value.target == tmp_path / "ft" and leftovers(tmp_path) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_figure_write_fails_in_one_line_and_leaves_nothing(tmp_path, monkeypatch, code):
    import matplotlib.pyplot as plt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", refuse(code, after_bytes=b"\x89PNG half"))
    fig = plt.figure()
    with pytest.raises(StorageError, match=f"cannot write '{tmp_path / 'fig.png'}'.*{CODES[code]}"):
        save_figure(fig, tmp_path / "fig.png")
    assert leftovers(tmp_path) == [] and not plt.fignum_exists(fig.number)  # the figure is closed too


def test_checkpoint_write_fails_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = checkpoint_path_for(tmp_path / "run")
    key = {"model": "m"}
    save_checkpoint(path, key, {"done": 8})
    monkeypatch.setattr(torch, "save", refuse(after_bytes=b"half a pickle"))
    with pytest.raises(StorageError, match=f"cannot write '{path}'.*ENOSPC"):
        save_checkpoint(path, key, {"done": 16})
    monkeypatch.undo()
    assert leftovers(tmp_path) == [path.name] and load_checkpoint(path, key)["done"] == 8


def test_storage_errors_are_found_through_exception_chains():
    """Libraries wrap the OSError of a failed write (torch.save raises it with a RuntimeError context)."""
    full = OSError(errno.ENOSPC, "No space left on device")
    wrapped = RuntimeError("PytorchStreamWriter failed writing file data/0")
    wrapped.__cause__ = full
    assert storage_error(wrapped, "x").errno == errno.ENOSPC
    context = OSError(errno.EDQUOT, "Disk quota exceeded")
    context.__context__ = RuntimeError("unexpected pos")
    assert storage_error(context, "x").errno == errno.EDQUOT
    assert storage_error(RuntimeError("other"), "x") is None
    assert storage_error(OSError(errno.EACCES, "Permission denied"), "x") is None


def test_real_torch_save_to_a_full_file_object_raises_the_oserror(tmp_path):
    """/dev/full refuses every write with ENOSPC: the checkpoint writer sees the errno through torch.save."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with pytest.raises(Exception) as info, open("/dev/full", "wb") as f:
        torch.save({"x": torch.zeros(100_000)}, f)
    assert storage_error(info.value, "ckpt").errno == errno.ENOSPC


def test_atomic_file_removes_its_temporary_file(tmp_path):
    with pytest.raises(StorageError):
        with atomic_file(tmp_path / "summary.csv") as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert leftovers(tmp_path) == []
    with atomic_file(tmp_path / "sub" / "a.txt") as tmp:
        tmp.write_text("whole")
    assert (tmp_path / "sub" / "a.txt").read_text() == "whole" and leftovers(tmp_path / "sub") == ["a.txt"]


def test_atomic_file_is_on_the_disk_before_its_rename(tmp_path, monkeypatch):
    """fsync of the written temporary file, then the rename: a power cut leaves the old file or the whole new one."""
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.stat(src).st_ino, Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_file(tmp_path / "a.txt") as tmp:
        tmp.write_text("whole")
    monkeypatch.undo()
    assert [e[0] for e in events] == ["fsync", "replace"] and events[0][1] == events[1][1]  # the same file
    assert events[1][2] == tmp_path / "a.txt" and (tmp_path / "a.txt").read_text() == "whole"


def write_spec(tmp_path, models, corpus):
    spec = tmp_path / "s.toml"
    spec.write_text(f"models = {json.dumps([str(m) for m in models])}\ncorpora = [\"{corpus}\"]\n"
                    "[settings]\nnum_seqs = 2\nmax_length = 16\nspectrum_seqs = 0\n")
    return spec


def test_sweep_stops_at_the_first_full_disk(tiny_models, docs_jsonl, tmp_path, monkeypatch):
    import condense.sweep

    calls = []
    real = condense.sweep.probe_to_folder
    monkeypatch.setattr(condense.sweep, "probe_to_folder", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(np, "savez", refuse())
    spec = write_spec(tmp_path, [tiny_models["gpt2"], tiny_models["llama"]], docs_jsonl)
    with pytest.raises(CondenseError, match=r"cannot write '.*gpt2__docs.jsonl'.*ENOSPC.*0 of 2 runs finished") as info:
        run_sweep(load_spec(spec), tmp_path / "out", quiet=True, echo=lambda _: None)
    assert "\n" not in str(info.value) and len(calls) == 1  # the second run was not started
    assert leftovers(tmp_path / "out") == []


def test_sweep_summary_write_fails_in_one_line(tmp_path, monkeypatch):
    missing = tmp_path / "notckpt"
    missing.mkdir()
    (missing / "readme.md").write_text("not a model")
    spec = write_spec(tmp_path, [missing], "builtin")
    monkeypatch.setattr(pd.DataFrame, "to_csv", refuse(errno.EDQUOT, after_bytes=b"model,corpus"))
    with pytest.raises(StorageError, match=r"summary.csv'.*EDQUOT"):
        run_sweep(load_spec(spec), tmp_path / "out", quiet=True, echo=lambda _: None)
    assert leftovers(tmp_path / "out") == []


def test_finetune_output_write_fails_in_one_line(tiny_gpt2, docs_jsonl, tmp_path, monkeypatch):
    from condense.training import finetune

    monkeypatch.setattr(pd.DataFrame, "to_csv", refuse())
    out = tmp_path / "outputs" / "ft"
    with pytest.raises(StorageError, match=f"cannot write '{out}'.*ENOSPC"):
        finetune(str(tiny_gpt2), out, corpus=str(docs_jsonl), steps=1, seq_len=16, batch_size=2,
                 probe_every=1, probe_seqs=2, quiet=True)
    assert leftovers(out.parent) == []


def run_main(argv, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["condense", *map(str, argv)])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err


def test_cli_boundary_reports_a_full_disk_in_one_line(tmp_path, monkeypatch, capsys):
    small_result().save(tmp_path / "run", heatmap=False)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", refuse(errno.EROFS))
    code, err = run_main(["plot", tmp_path / "run", "--out", tmp_path / "f.png"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "EROFS" in err and str(tmp_path / "f.png") in err
    assert leftovers(tmp_path) == ["run"]


def test_cli_boundary_catches_a_storage_error_of_any_writer(tmp_path, monkeypatch, capsys):
    """A writer outside the atomic helpers: its OSError still becomes one line (without a tidiness claim)."""
    import condense.api

    small_result().save(tmp_path / "run", heatmap=False)

    def raw(fig, out, dpi=200):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(condense.api, "save_figure", raw)
    code, err = run_main(["plot", tmp_path / "run", "--out", tmp_path / "f.png"], monkeypatch, capsys)
    assert code == 2 and err == f"condense: error: cannot write '{tmp_path / 'f.png'}': " \
                                f"no space left on the device (ENOSPC); free some space or write elsewhere\n"


def test_cli_boundary_lets_other_errors_keep_their_traceback(tmp_path, monkeypatch, capsys):
    import condense.api

    small_result().save(tmp_path / "run", heatmap=False)
    monkeypatch.setattr(condense.api, "save_figure", refuse(errno.EACCES))
    monkeypatch.setattr(sys, "argv", ["condense", "plot", str(tmp_path / "run"), "--out", str(tmp_path / "f.png")])
    with pytest.raises(PermissionError):
        main()


# --- real storage limits -------------------------------------------------------------------------


def limited_probe(args, limit_bytes: int) -> subprocess.CompletedProcess:
    """`condense probe` with every file it writes capped at ``limit_bytes`` (RLIMIT_FSIZE; SIGXFSZ ignored)."""
    import resource
    import signal

    def cap():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "condense", "probe", *map(str, args)], capture_output=True,
                          text=True, env=ENV, preexec_fn=cap, timeout=300)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics are Linux's")
def test_real_file_size_limit_through_the_cli(tiny_gpt2, docs_jsonl, tmp_path):
    # matplotlib's font cache is written on first use: build it without the limit
    subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], env=ENV, check=True, timeout=300)
    out = tmp_path / "runs" / "run"
    p = limited_probe([tiny_gpt2, "--corpus", docs_jsonl, "--num-seqs", 2, "--max-length", 16, "--out", out, "-q"],
                      limit_bytes=8192)  # the csv and npz fit, the heatmap does not
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [
        f"condense: error: cannot write '{out}': a file exceeds the file-size limit (EFBIG, e.g. `ulimit -f`); "
        "raise the limit or write elsewhere; nothing was left half-written"]
    assert leftovers(tmp_path / "runs") == []


def tmpfs_available() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-r", "-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux") or not tmpfs_available(),
                    reason="needs unprivileged user namespaces to mount a small tmpfs (unshare -r -m)")
def test_real_full_disk_on_a_small_tmpfs(tiny_gpt2, docs_jsonl, tmp_path):
    """A 32 KiB tmpfs holds layers.csv and histograms.npz but not the heatmap: ENOSPC mid-folder."""
    disk = tmp_path / "disk"
    disk.mkdir()
    report = tmp_path / "report.json"
    script = (
        f"mount -t tmpfs -o size=32k tmpfs {disk} && "
        f"{sys.executable} -m condense probe {tiny_gpt2} --corpus {docs_jsonl} --num-seqs 2 --max-length 16 "
        f"--out {disk / 'run'} -q 2> {tmp_path / 'stderr'}; rc=$?; "
        f"{sys.executable} -c 'import json, os, sys; json.dump({{\"rc\": int(sys.argv[1]), "
        f"\"left\": sorted(os.listdir(sys.argv[2]))}}, open(sys.argv[3], \"w\"))' $rc {disk} {report}"
    )
    subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], env=ENV, timeout=300, check=True)
    outcome = json.loads(report.read_text())
    stderr = (tmp_path / "stderr").read_text()
    assert outcome == {"rc": 2, "left": []}, stderr
    assert stderr.strip().splitlines() == [
        f"condense: error: cannot write '{disk / 'run'}': no space left on the device (ENOSPC); "
        "free some space or write elsewhere; nothing was left half-written"]


@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600),
                                                           (0o002, 0o775, 0o664)])
def test_written_results_get_the_mode_of_a_plain_create(tmp_path, umask, folder_mode, file_mode):
    """Temporary files and folders are created private; what is renamed into place must be as readable
    as anything else the user writes (results on a shared machine), following the umask."""
    old = os.umask(umask)
    try:
        with atomic_folder(tmp_path / "run") as tmp:
            (tmp / "layers.csv").write_text("x\n")
        with atomic_file(tmp_path / "fig.png") as tmp:
            tmp.write_bytes(b"png")
    finally:
        os.umask(old)
    assert (tmp_path / "run").stat().st_mode & 0o777 == folder_mode
    assert (tmp_path / "fig.png").stat().st_mode & 0o777 == file_mode
