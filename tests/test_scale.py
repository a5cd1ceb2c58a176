"""--batch-size auto backs off on out-of-memory; --device-map spreads a model and keeps the numbers."""

import threading

import numpy as np
import pytest
import torch

import condense
from condense.errors import CondenseError
from condense.probing.extract import HiddenStateReader

SMALL = dict(num_seqs=6, max_length=40, quiet=True, spectrum_seqs=2)


@pytest.fixture
def oom_above_two(monkeypatch):
    """Make every forward of more than 2 sequences fail as an allocator would."""
    real = HiddenStateReader.read
    attempts = []

    def read(self, ids, attention, layers, consume):
        attempts.append(ids.shape[0])
        if ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, ids, attention, layers, consume)

    monkeypatch.setattr(HiddenStateReader, "read", read)
    return attempts


def test_auto_batch_backs_off_and_matches_fixed_batch(tiny_gpt2, docs_jsonl, oom_above_two):
    auto = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), batch_size="auto", **SMALL)
    assert auto.run["batch_size_used"] == 2 and auto.run["settings"]["batch_size"] == "auto"
    assert oom_above_two[0] == 6 and oom_above_two[1] == 3 and set(oom_above_two[2:]) == {2}
    fixed = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), batch_size=2, **SMALL)
    np.testing.assert_allclose(auto.layers["mean_cos"], fixed.layers["mean_cos"], atol=1e-7)


@pytest.mark.parametrize("hold_limit", [0, 1 << 30])  # layers measured in the hooks, or by workers afterwards
def test_out_of_memory_half_way_through_a_batch_drops_its_partial_results(tiny_gpt2, docs_jsonl, monkeypatch,
                                                                          hold_limit):
    """The allocator fails after two layers of a batch were already handed over: nothing of that batch
    may count, the retry at half the size must give the numbers of a run at that size."""
    real = HiddenStateReader.read

    def read(self, ids, attention, layers, consume):
        taken = []

        def flaky(i, hidden):
            if ids.shape[0] > 2 and len(taken) == 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            taken.append(i)
            consume(i, hidden)

        return real(self, ids, attention, layers, flaky)

    monkeypatch.setattr(HiddenStateReader, "read", read)
    monkeypatch.setattr("condense.probing.probe.HOLD_LIMIT", hold_limit)
    monkeypatch.setattr("condense.probing.probe.auto_batch_start", lambda *args: 6)
    auto = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), batch_size="auto", **SMALL)
    assert auto.run["batch_size_used"] == 2
    fixed = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), batch_size=2, **SMALL)
    assert list(auto.layers["n_pairs"]) == list(fixed.layers["n_pairs"])
    np.testing.assert_allclose(auto.layers["mean_cos"], fixed.layers["mean_cos"], atol=1e-7)


def test_out_of_memory_in_a_worker_repeats_the_batches_not_yet_counted(tiny_gpt2, docs_jsonl, monkeypatch):
    """On the CPU a batch is measured by the workers while the next batch's forward pass runs. When a
    worker runs out of memory, that batch and the one already forwarded after it are both repeated at
    half the size, and the numbers are those of a run at that size."""
    from condense.metrics.streaming import PooledCosineAccumulator

    real_read, real_measure = HiddenStateReader.read, PooledCosineAccumulator.measure
    rows_read = []

    def read(self, ids, attention, layers, consume):
        rows_read.append(ids.shape[0])
        return real_read(self, ids, attention, layers, consume)

    def measure(unit, mask, keep=0):
        if unit.shape[0] > 2 and threading.current_thread().name.startswith("condense-worker"):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 2147483648 bytes")
        return real_measure(unit, mask, keep)

    monkeypatch.setattr(HiddenStateReader, "read", read)
    monkeypatch.setattr(PooledCosineAccumulator, "measure", staticmethod(measure))
    monkeypatch.setattr("condense.probing.probe.auto_batch_start", lambda *args: 4)
    auto = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), batch_size="auto", device="cpu", **SMALL)
    # [0:4] measured in the workers while [4:6] is forwarded; [0:4] fails, so both come again in twos
    assert rows_read == [4, 2, 2, 2, 2]
    assert auto.run["batch_size_used"] == 2
    fixed = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), batch_size=2, device="cpu", **SMALL)
    assert auto.layers.equals(fixed.layers)


def test_an_error_in_the_next_forward_pass_leaves_no_worker_job_running(tiny_gpt2, docs_jsonl, monkeypatch):
    """The workers are still measuring batch 1 when batch 2's forward pass fails: the probe raises only
    after every job that started has finished (the rest are cancelled), so none outlives the call.

    No timing decides the outcome: batch 2's read fails only once a worker job has started, and every
    worker job holds until the probe has returned (or HOLD seconds pass, which is how a correct probe,
    waiting for its jobs, gets past them); each records whether the probe had returned by its end."""
    from condense.metrics.spectrum import worker_pool
    from condense.metrics.streaming import PooledCosineAccumulator

    real_read, real_measure = HiddenStateReader.read, PooledCosineAccumulator.measure
    reads, started, ended_after_return = [], [], []
    a_job_started, probe_returned = threading.Event(), threading.Event()

    def read(self, ids, attention, layers, consume):
        reads.append(ids.shape[0])
        if len(reads) == 2:
            assert a_job_started.wait(60), "no worker job of batch 1 started"
            raise RuntimeError("shape mismatch")
        return real_read(self, ids, attention, layers, consume)

    def measure(unit, mask, keep=0):
        if not threading.current_thread().name.startswith("condense-worker"):
            return real_measure(unit, mask, keep)
        started.append(1)
        a_job_started.set()
        probe_returned.wait(HOLD)
        result = real_measure(unit, mask, keep)
        ended_after_return.append(probe_returned.is_set())
        return result

    monkeypatch.setattr(HiddenStateReader, "read", read)
    monkeypatch.setattr(PooledCosineAccumulator, "measure", staticmethod(measure))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), batch_size=2, device="cpu", **SMALL)
    probe_returned.set()
    _drain(worker_pool())  # a job a broken probe left behind ends now, and records that it ended late
    assert started and len(ended_after_return) == len(started)
    assert not any(ended_after_return), "a worker job was still running when the probe raised"


HOLD = 2.0  # seconds a worker job of the test above holds for the probe to return


def _drain(pool) -> None:
    """Wait until every job queued on ``pool`` so far has finished: one job per worker thread, each held
    until all of them run at once, which needs every thread free of earlier jobs."""
    everyone = threading.Barrier(pool.workers)
    for job in [pool.executor.submit(everyone.wait, 60) for _ in range(pool.workers)]:
        job.result()


def test_fixed_batch_out_of_memory_is_one_clear_error(tiny_gpt2, docs_jsonl, oom_above_two):
    with pytest.raises(CondenseError, match="out of memory at batch size 4; try --batch-size auto"):
        condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), batch_size=4, **SMALL)


def test_non_memory_errors_are_not_swallowed(tiny_gpt2, docs_jsonl, monkeypatch):
    def read(self, *args):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(HiddenStateReader, "read", read)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), batch_size="auto", **SMALL)


def test_device_map_with_disk_offload_gives_the_same_numbers(tiny_models, docs_jsonl, tmp_path):
    pytest.importorskip("accelerate")
    folder = str(tiny_models["llama"])
    plain = condense.probe(folder, corpus=str(docs_jsonl), **SMALL)
    # a CPU budget far below the model's size forces accelerate to offload blocks to disk
    split = condense.probe(folder, corpus=str(docs_jsonl), device_map="auto", max_memory="cpu=200KB",
                           offload_folder=str(tmp_path / "offload"), **SMALL)
    assert split.run["device"] == "device_map=auto"
    assert "disk" in split.run["placement"]  # some blocks really were offloaded
    numeric = [c for c in plain.layers.columns if plain.layers[c].dtype.kind == "f"]
    np.testing.assert_allclose(split.layers[numeric], plain.layers[numeric], rtol=1e-5, atol=1e-6)


def test_bad_placement_options(tiny_gpt2, docs_jsonl):
    with pytest.raises(CondenseError, match="need --device-map auto"):
        condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), max_memory="cpu=1GB", **SMALL)
    with pytest.raises(CondenseError, match="bad --max-memory"):
        condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), device_map="auto", max_memory="lots", **SMALL)


def test_cpu_auto_batch_starts_at_512_tokens(monkeypatch, tiny_gpt2, docs_jsonl):
    """On the CPU, --batch-size auto starts with about 512 tokens a batch (never fewer than one sequence,
    never more than the run has), capped by half the available memory; accelerators start at 64."""
    from condense.probing import batching
    from condense.probing.batching import auto_batch_start

    cpu = torch.device("cpu")
    assert [auto_batch_start(100, length, 32, 3, cpu) for length in (128, 64, 512, 2048)] == [4, 8, 1, 1]
    assert auto_batch_start(3, 64, 32, 3, cpu) == 3 and auto_batch_start(500, 16, 32, 3, torch.device("meta")) == 64
    probed = condense.probe(str(tiny_gpt2), corpus=str(docs_jsonl), num_seqs=6, max_length=128, quiet=True,
                            spectrum_seqs=0, device="cpu")
    assert probed.run["batch_size_used"] == 4 and probed.run["settings"]["batch_size"] == "auto"
    per_seq = 128 * 32 * 4 * (3 + 16) + 128 ** 2 * 4 * 32  # the activation estimate of one sequence

    class Meminfo:
        def __init__(self, *_args):
            self.lines = [f"MemAvailable: {2 * 2 * per_seq // 1024 + 1} kB\n"]  # room for two sequences

        def __enter__(self):
            return iter(self.lines)

        def __exit__(self, *_exc):
            return False

    monkeypatch.setattr(batching, "open", Meminfo, raising=False)
    assert auto_batch_start(100, 128, 32, 3, cpu) == 2
