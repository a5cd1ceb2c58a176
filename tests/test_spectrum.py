"""The one-eigendecomposition spectrum (eigvalsh + Lanczos) equals the full SVD-based definitions; the
upper-triangle pair sums equal sums over every pair; accumulators stage a batch before adding it."""

import faulthandler
import math
import pickle
import threading

import numpy as np
import pytest
import torch

from condense.metrics.spectrum import (DENSE_EIGEN_MAX, SPECTRAL_KEYS, centred_gram, gram_of_rows, lanczos_top_eigenvalue,
                                       largest_eigenvalue, spectrum_from_gram, spectrum_of_products, spectrum_of_rows,
                                       top_eigenvalue, WorkerPool, worker_pool)
from condense.metrics.streaming import (FINE_BINS, PooledCosineAccumulator, TokenGeometryAccumulator,
                                        upper_pair_sums)


def full_spectrum(x: np.ndarray) -> dict[str, float]:
    """The definitions, from full float64 SVDs of X and of X - 1 mu^T."""
    sv = np.linalg.svd(x, compute_uv=False)
    p = sv[sv > 0] / sv.sum()
    entropy = float(-(p * np.log(p)).sum())
    mu = x.mean(0)
    return {"mev": sv[0] ** 2 / (sv ** 2).sum(), "sv_entropy": entropy, "effective_rank": math.exp(entropy),
            "hf_lf_ratio": np.linalg.svd(x - mu, compute_uv=False)[0] / (math.sqrt(len(x)) * np.linalg.norm(mu))}


def fast_spectrum(x: torch.Tensor) -> dict[str, torch.Tensor]:
    gram, mean = gram_of_rows(x)
    return spectrum_from_gram(gram, mean, x.shape[1], x.double().square().sum(dim=(1, 2)))


def token_matrices(kind: str, b: int, n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, n, d))
    if kind == "cone":  # a shared direction: a narrow cone, a dominant singular value
        x += 4.0 * rng.standard_normal(d)
    elif kind == "outlier":  # one huge feature dimension and one massive token
        x[:, :, 3] += 50.0
        x[:, 0] *= 30.0
    elif kind == "low_rank":  # rank 3: zero singular values
        x = x[:, :, :3] @ rng.standard_normal((3, d))
    return x


@pytest.mark.parametrize("kind", ["gauss", "cone", "outlier", "low_rank"])
@pytest.mark.parametrize("n, d", [(12, 40), (40, 12), (16, 16), (2, 5)])  # n < D, n > D, n = D, two tokens
def test_spectrum_equals_full_svd(kind, n, d):
    x = token_matrices(kind, 3, n, d)
    fast = fast_spectrum(torch.tensor(x))  # float64 all the way: differences are the method's, not rounding's
    for b in range(3):
        ref = full_spectrum(x[b])
        for key in SPECTRAL_KEYS:
            tol = 1e-6 if kind == "low_rank" and key in ("sv_entropy", "effective_rank") else 1e-9
            assert float(fast[key][b]) == pytest.approx(ref[key], rel=tol), (key, b)


@pytest.mark.parametrize("n, d", [(60, 90), (90, 60)])
def test_spectrum_in_float32_is_within_float32_rounding(n, d):
    x = token_matrices("cone", 4, n, d, seed=3)
    fast = fast_spectrum(torch.tensor(x, dtype=torch.float32))
    for b in range(4):
        ref = full_spectrum(x[b].astype(np.float32).astype(np.float64))
        for key in SPECTRAL_KEYS:
            assert float(fast[key][b]) == pytest.approx(ref[key], rel=2e-4), (key, b)


def test_centred_gram_is_the_gram_of_the_centred_rows():
    x = torch.tensor(token_matrices("cone", 2, 7, 11), dtype=torch.float64)
    for rows in (x, x.transpose(1, 2)[:, :5, :7].transpose(1, 2)):  # n <= D and n > D (7 tokens of 5 features)
        gram, mean = gram_of_rows(rows)
        centred = rows - rows.mean(dim=1, keepdim=True)
        expected = centred @ centred.transpose(1, 2) if rows.shape[1] <= rows.shape[2] else centred.transpose(1, 2) @ centred
        torch.testing.assert_close(centred_gram(gram, mean, rows.shape[1]), expected, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("m", [50, DENSE_EIGEN_MAX + 140])  # eigvalsh and ARPACK on the CPU
@pytest.mark.parametrize("solver", [top_eigenvalue, lanczos_top_eigenvalue], ids=["cpu", "lanczos"])
def test_top_eigenvalue_closed_forms_and_hard_cases(m, solver):
    rng = np.random.default_rng(1)
    q = np.linalg.qr(rng.standard_normal((m, m)))[0]
    cases = {
        "well separated": np.linspace(0.0, 1.0, m),
        "double top": np.r_[np.linspace(0.0, 0.5, m - 2), 1.0, 1.0],
        "tiny gap": np.r_[np.linspace(0.0, 0.5, m - 2), 1.0 - 1e-6, 1.0],  # needs many steps or the fallback
        "one nonzero": np.r_[np.zeros(m - 1), 3.0],
    }
    a = torch.tensor(np.stack([q @ np.diag(v) @ q.T for v in cases.values()]))
    top = solver(a)
    for k, values in enumerate(cases.values()):
        assert float(top[k]) == pytest.approx(values.max(), rel=1e-7), list(cases)[k]
    assert float(solver(torch.zeros(1, m, m))[0]) == 0.0
    assert float(solver(torch.tensor([[[2.5]]]))[0]) == 2.5


def test_largest_eigenvalue_meets_its_relative_accuracy_above_the_dense_size(monkeypatch):
    """ARPACK's answer for a Gram matrix of 511 cone-like tokens (the one-text sample) is within rtol of
    the dense solver's, for a tight and a loose rtol, and eigvalsh is not what gave it."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((511, 96)) + 3.0 * rng.standard_normal(96)) * rng.uniform(0.1, 3.0, 96)
    xc = x - x.mean(axis=0)
    gram = torch.tensor(xc @ xc.T)
    exact = float(np.linalg.eigvalsh(xc @ xc.T)[-1])

    def no_dense(*_args, **_kwargs):
        raise AssertionError("largest_eigenvalue used eigvalsh above DENSE_EIGEN_MAX rows")

    monkeypatch.setattr(torch.linalg, "eigvalsh", no_dense)
    for rtol in (1e-10, 1e-4):
        assert abs(largest_eigenvalue(gram, rtol) - exact) <= rtol * exact, rtol


def test_largest_eigenvalue_falls_back_to_eigvalsh_when_arpack_does_not_settle(monkeypatch):
    import scipy.sparse.linalg

    def unsettled(*_args, **_kwargs):
        raise scipy.sparse.linalg.ArpackNoConvergence("no convergence", np.zeros(0), np.zeros((0, 0)))

    monkeypatch.setattr(scipy.sparse.linalg, "eigsh", unsettled)
    values = np.r_[np.linspace(0.0, 0.5, 199), 1.5]
    q = np.linalg.qr(np.random.default_rng(6).standard_normal((200, 200)))[0]
    assert largest_eigenvalue(torch.tensor(q @ np.diag(values) @ q.T)) == pytest.approx(1.5, rel=1e-12)


def test_lanczos_converges_by_its_residual_bound_without_the_fallback(monkeypatch):
    """A matrix with a clear gap at the top settles in a few Lanczos steps (the residual bound works), far
    below the 96-step limit that hands a matrix to eigvalsh; the value meets the promised bound."""
    rng = np.random.default_rng(2)
    m = 200  # more than the step limit, so only a working convergence check avoids the fallback
    q = np.linalg.qr(rng.standard_normal((m, m)))[0]
    values = np.r_[np.linspace(0.0, 0.5, m - 1), 1.0]
    a = torch.tensor(q @ np.diag(values) @ q.T).unsqueeze(0)

    def no_fallback(*_args, **_kwargs):
        raise AssertionError("the Lanczos fell back to eigvalsh")

    monkeypatch.setattr(torch.linalg, "eigvalsh", no_fallback)
    for rtol in (1e-7, 1e-3):
        top = float(lanczos_top_eigenvalue(a, rtol=rtol)[0])
        assert 0.0 <= 1.0 - top <= rtol * top


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_lanczos_bound_is_relative_at_any_scale(scale):
    """The promise |lambda_max - theta| <= 1e-7 theta holds for small and large matrices alike (hidden
    states of a layer can have any scale): an absolute bound would stop a 1e-6 matrix at once."""
    rng = np.random.default_rng(3)
    q = np.linalg.qr(rng.standard_normal((80, 80)))[0]
    values = scale * np.r_[np.linspace(0.0, 0.9, 79), 1.0]
    top = float(lanczos_top_eigenvalue(torch.tensor(q @ np.diag(values) @ q.T).unsqueeze(0))[0])
    assert abs(top - scale) <= 1e-7 * scale, (top / scale - 1)


def test_lanczos_falls_back_to_the_largest_eigenvalue(monkeypatch):
    """500 eigenvalues spread evenly on [0, 1]: no gap at the top, so 96 Lanczos steps do not meet the
    bound and the matrix goes to eigvalsh, whose largest value is the answer."""
    rng = np.random.default_rng(4)
    m = 500
    q = np.linalg.qr(rng.standard_normal((m, m)))[0]
    a = torch.tensor(q @ np.diag(np.linspace(0.0, 1.0, m)) @ q.T).unsqueeze(0)
    calls, real = [], torch.linalg.eigvalsh

    def counted(x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigvalsh", counted)
    top = float(lanczos_top_eigenvalue(a)[0])
    assert calls == [(1, m, m)]  # the fallback was reached
    assert top == pytest.approx(1.0, rel=1e-12)


def test_top_eigenvalue_is_deterministic():
    a = torch.tensor(token_matrices("gauss", 2, 30, 30))
    a = a @ a.transpose(1, 2)
    assert torch.equal(top_eigenvalue(a), top_eigenvalue(a))


@pytest.mark.parametrize("block", [1, 3, 5, 64])
def test_upper_pair_sums_equal_sums_over_every_pair(block):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 13, 6)) + 1.0
    x[1, 10:] = 0.0  # padded rows are zero: their pairs are cosine 0, as the caller's masking makes them
    u = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-300)
    sums = upper_pair_sums(torch.tensor(u), block)
    c = np.clip(np.stack([m @ m.T for m in u]), -1, 1)[:, *np.triu_indices(13, 1)].ravel()
    assert float(sums["total_sq"]) == pytest.approx((c ** 2).sum(), rel=1e-12)
    assert float(sums["angle_sum"]) == pytest.approx(np.arccos(c).sum(), rel=1e-12)
    np.testing.assert_array_equal(sums["fine"].numpy(), np.histogram(c, FINE_BINS, (-1, 1))[0])


def test_pooled_measure_leaves_the_state_alone_until_added():
    rng = np.random.default_rng(4)
    unit = torch.nn.functional.normalize(torch.tensor(rng.standard_normal((2, 9, 5))), dim=-1)
    mask = torch.ones(2, 9, dtype=torch.bool)
    acc = PooledCosineAccumulator()
    acc.update(unit, mask)
    before = acc.finalize().columns
    batch = acc.measure(unit * 0.5 + 0.5, mask)  # measured, then dropped (an out-of-memory retry)
    assert acc.finalize().columns == before
    acc.add(batch)
    assert acc.finalize().columns["n_pairs"] == 2 * before["n_pairs"]


def test_per_sequence_values_are_joined_as_batches_come():
    """A long run keeps its per-sequence values in a few tensors, not one per batch (each tiny tensor
    pins heap pages for the whole run); the values are those of every batch, in order."""
    rng = np.random.default_rng(6)
    pooled, geometry = PooledCosineAccumulator(), TokenGeometryAccumulator(5, spectrum_seqs=0)
    mask, positions = torch.ones(2, 7, dtype=torch.bool), torch.arange(7).expand(2, 7)
    expected = []
    for _ in range(100):
        x = torch.tensor(rng.standard_normal((2, 7, 5)))
        unit = torch.nn.functional.normalize(x, dim=-1)
        batch = pooled.measure(unit, mask)
        expected.append(batch["seq_sums"])
        pooled.add(batch)
        geometry.update(x, mask, positions)
    for parts in (pooled.seq_sums, pooled.seq_counts, *geometry.per_seq.values()):
        assert len(parts) <= 32 and sum(len(p) for p in parts) == 200
    torch.testing.assert_close(torch.cat(pooled.seq_sums), torch.cat(expected), rtol=0, atol=0)


def test_geometry_spectra_from_workers_match_and_pickle_resolved():
    x = torch.tensor(token_matrices("cone", 4, 20, 8, seed=5), dtype=torch.float32)
    mask = torch.ones(4, 20, dtype=torch.bool)
    mask[2, 15:] = False  # one ragged sequence: its own spectrum task
    positions = torch.arange(20).expand(4, -1)
    now, later = TokenGeometryAccumulator(8, spectrum_seqs=3), TokenGeometryAccumulator(8, spectrum_seqs=3)
    now.update(x, mask, positions)
    later.add(later.measure(x, mask, positions, spectra="async"))
    copy = pickle.loads(pickle.dumps(later))  # a checkpoint waits for the workers
    assert not any(hasattr(s, "result") for s in copy.spectra)
    assert now.finalize() == later.finalize() == copy.finalize()
    ref = [full_spectrum(x[b][mask[b]].double().numpy()) for b in range(3)]
    for key in SPECTRAL_KEYS:
        assert now.finalize()[key] == pytest.approx(np.mean([r[key] for r in ref]), rel=1e-4)


def test_worker_threads_stay_single_threaded_and_leave_the_caller_alone():
    threads = torch.get_num_threads()
    pool = worker_pool(3)  # a pool of its own
    assert torch.get_num_threads() == threads
    # torch takes a thread's count at its first parallel operation, from a process-wide default that
    # set_num_threads anywhere changes: the probe toggles it in the main thread while workers run
    torch.set_num_threads(1)
    torch.set_num_threads(max(threads, 2))
    try:
        def first_parallel_operation():
            torch.zeros(1 << 20).add_(1)
            return torch.get_num_threads()

        assert {pool.executor.submit(first_parallel_operation).result() for _ in range(6)} == {1}
        x = torch.randn(2, 10, 4, dtype=torch.float64)
        gram, mean = gram_of_rows(x)
        assert set(pool.submit(spectrum_from_gram, gram, mean, 10, x.square().sum(dim=(1, 2))).result()) == set(SPECTRAL_KEYS)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_spectrum_of_real_hidden_states_equals_full_svd():
    """SmolLM2's hidden states (massive first token, outlier dimensions) on 300 tokens: n < D = 576;
    and the same rows cut to their first 200 features: n > D."""
    from condense.models import load_model
    from condense.probing.corpus import build_sequences, read_documents

    loaded = load_model("smollm2-135m", device="cpu")
    seq = build_sequences(read_documents("builtin"), loaded.tokenizer, 300, 1)[0]
    with torch.no_grad():
        states = loaded.model(input_ids=torch.tensor([seq.input_ids]), output_hidden_states=True).hidden_states
    for i in (0, 1, 10, 20, len(states) - 1):
        for x in (states[i][0], states[i][0][:, :200]):
            fast = fast_spectrum(x.float().unsqueeze(0))
            ref = full_spectrum(x.double().numpy())
            for key in SPECTRAL_KEYS:
                tol = 5e-3 if key in ("sv_entropy", "effective_rank") else 1e-4  # float32 Gram eigenvalues
                assert float(fast[key][0]) == pytest.approx(ref[key], rel=tol), (i, x.shape, key)


def test_spectrum_from_pair_products_equals_from_rows():
    rng = np.random.default_rng(6)
    x = torch.tensor(rng.standard_normal((9, 14)) + 2.0)
    counted = torch.tensor([False, True, True, True, False, True, True, True, True])  # a special token, padding
    norms = x.norm(dim=-1)
    unit = x / norms.unsqueeze(-1) * counted.unsqueeze(-1)
    upper = (unit @ unit.T).triu()
    rows = x[counted]
    trace = rows.square().sum().view(1)
    via_products = spectrum_of_products(upper, counted, norms, rows.mean(dim=0), trace)
    via_rows = spectrum_of_rows(rows.unsqueeze(0), trace)
    for key in SPECTRAL_KEYS:
        assert float(via_products[key][0]) == pytest.approx(float(via_rows[key][0]), rel=1e-10), key


def _probe_spectrum_in_child(x, trace, expected, workers, timeout=60) -> None:
    faulthandler.dump_traceback_later(timeout, exit=True)  # a hang prints every thread's stack, exits 1
    got = worker_pool(workers).submit(spectrum_of_rows, x, trace).result()
    assert all(torch.equal(got[k], expected[k]) for k in SPECTRAL_KEYS)


def test_forked_children_get_a_working_worker_pool():
    """A child forked after the parent started its workers has none of their threads: its first job must
    run on a fresh pool, not wait forever on the parent's. Each of 24 children starts 8 workers at once:
    torch rebuilds its inherited thread pool at the first set_num_threads after a fork, and two threads
    doing that together can get none, so a worker failed to start and the pool waited for it forever
    (1 child in 30 to 150 on 2 cores; once in CI)."""
    import multiprocessing

    x = torch.tensor(token_matrices("gauss", 2, 12, 8))
    trace = x.square().sum(dim=(1, 2))
    expected = worker_pool(2).submit(spectrum_of_rows, x, trace).result()  # the parent's threads exist now
    context = multiprocessing.get_context("fork")
    for child_number in range(24):
        child = context.Process(target=_probe_spectrum_in_child, args=(x, trace, expected, 8))
        child.start()
        child.join(120)
        if child.is_alive():
            child.kill()
            child.join()
        assert child.exitcode == 0, f"forked child {child_number} exited {child.exitcode} (its stacks are above)"


def test_a_child_forked_while_a_pool_was_being_built_gets_one():
    import multiprocessing

    from condense.metrics import spectrum

    x = torch.tensor(token_matrices("gauss", 1, 6, 4))
    trace = x.square().sum(dim=(1, 2))
    expected = worker_pool(2).submit(spectrum_of_rows, x, trace).result()
    with spectrum._pools_lock:  # as if another thread were building a pool at the fork
        child = multiprocessing.get_context("fork").Process(target=_probe_spectrum_in_child,
                                                            args=(x, trace, expected, 2, 20))
        child.start()
    child.join(60)
    assert child.exitcode == 0, "the child waited for a lock that only the parent could release"


def test_the_pool_sets_torch_threads_on_its_own_thread_before_any_worker_starts(monkeypatch):
    callers = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (callers.append(threading.current_thread().name), real(n)))
    pool = WorkerPool(2)
    pool.executor.shutdown()
    assert callers[0] == threading.current_thread().name
    assert sum(name.startswith("condense-worker") for name in callers) == 2


def test_a_worker_that_fails_to_start_makes_the_pool_raise_instead_of_waiting(monkeypatch):
    real = torch.set_num_threads

    def failing_in_workers(n: int) -> None:
        if threading.current_thread().name.startswith("condense-worker"):
            raise RuntimeError("planted: Invalid thread pool!")
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", failing_in_workers)
    errors = []

    def build() -> None:
        try:
            WorkerPool(2)
        except RuntimeError as err:
            errors.append(str(err))

    builder = threading.Thread(target=build, daemon=True)
    builder.start()
    builder.join(60)
    assert errors and "failed to start" in errors[0], "the pool's constructor waited for a worker that had failed"
