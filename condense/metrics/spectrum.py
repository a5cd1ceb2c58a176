"""The spectrum of a sequence's token matrix, at the cost of one eigendecomposition.

For the n token rows of one sequence, X [n, D] with mean token mu, let G be the Gram matrix of
the smaller side (``X X^T`` [n, n] if n <= D, else ``X^T X`` [D, D]); both share the non-zero
eigenvalues lambda_i = sigma_i^2 of X. Then

- MEV = lambda_max / tr G, with tr G = sum_i |x_i|^2;
- singular-value entropy H = -sum_i p_i log p_i, p_i = sigma_i / sum_j sigma_j, and the effective
  rank exp(H): these need every eigenvalue (one ``eigvalsh`` of G);
- HF/LF = sigma_max(X - 1 mu^T) / (sqrt(n) |mu|): only the top eigenvalue of the centred Gram
  matrix, found by a Lanczos iteration that stops on a residual bound (a handful of matrix-vector
  products instead of a second eigendecomposition): ARPACK's (scipy) for a matrix on the CPU, a
  batched one in torch elsewhere.

The eigen-solvers run on the CPU in worker threads limited to one torch thread each: a
multi-threaded ``eigvalsh`` of small matrices synchronises its threads hundreds of times per call and
slows down a hundredfold when another process competes for the cores, whereas independent
matrices in parallel threads only share the cores. On an accelerator the workers overlap the next
layers' forward pass. Nothing here imports transformers.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import scipy.sparse.linalg
import torch

__all__ = ["SPECTRAL_KEYS", "TOP_EIGEN_RTOL", "DENSE_EIGEN_MAX", "gram_of_rows", "centred_gram", "largest_eigenvalue",
           "top_eigenvalue", "lanczos_top_eigenvalue",
           "spectrum_from_gram", "spectrum_of_rows", "spectrum_of_products", "WorkerPool", "worker_pool"]

SPECTRAL_KEYS = ("mev", "sv_entropy", "effective_rank", "hf_lf_ratio")
TOP_EIGEN_RTOL = 1e-7  # residual bound of the top Ritz value, relative: |lambda_max - theta| <= rtol * theta
_LANCZOS_CHECK = 2  # steps between convergence checks (each check is a small batched eigh)
_LANCZOS_MAX_STEPS = 96  # then fall back to eigvalsh (a matrix with no spectral gap at the top)
# one thread, one float64 matrix: eigvalsh 0.40 ms at 128 rows, 2.0 at 256, 12 at 511; ARPACK 0.62,
# 0.90 and 2.2 ms (the batched torch Lanczos below: 5.8 ms at 511)
DENSE_EIGEN_MAX = 160


def gram_of_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gram matrix of the smaller side of each token matrix, and the mean tokens.

    x: [b, n, D] (b sequences of n counted tokens, in their own dtype and device). Returns
    ``(G, mu)``: G = x x^T [b, n, n] when n <= D, else x^T x [b, D, D]; mu [b, D].
    """
    if x.shape[1] <= x.shape[2]:
        gram = x @ x.transpose(1, 2)
    else:
        gram = x.transpose(1, 2) @ x
    return gram, x.mean(dim=1)


def centred_gram(gram: torch.Tensor, mean: torch.Tensor, n: int) -> torch.Tensor:
    """The Gram matrix of ``X - 1 mu^T`` from that of X (no second product).

    n <= D ([b, n, n]): ``P G P`` with P = I - 11^T/n, i.e. G_ij - r_i - r_j + mean(G), r the row
    means; n > D ([b, D, D]): ``G - n mu mu^T``. gram [b, m, m], mean [b, D], returns [b, m, m].
    """
    if n <= mean.shape[1]:
        r = gram.mean(dim=2, keepdim=True)
        return gram - r - r.transpose(1, 2) + gram.mean(dim=(1, 2), keepdim=True)
    return gram - n * mean.unsqueeze(2) * mean.unsqueeze(1)


def largest_eigenvalue(matrix: torch.Tensor, rtol: float = TOP_EIGEN_RTOL) -> float:
    """Largest eigenvalue of one symmetric positive semi-definite matrix [m, m], in float64 on the CPU.

    Up to :data:`DENSE_EIGEN_MAX` rows ``eigvalsh``; above, ARPACK's implicitly restarted Lanczos
    (``scipy.sparse.linalg.eigsh``, no eigenvector) to relative accuracy ``rtol`` from a seeded start
    vector (deterministic), its products through torch so that they obey the caller's torch thread
    count (numpy's BLAS has threads of its own). A matrix ARPACK cannot start on (a zero matrix) or
    does not settle goes to ``eigvalsh``.
    """
    matrix = matrix.detach().to("cpu", torch.float64)
    m = matrix.shape[0]
    if m <= DENSE_EIGEN_MAX:
        return float(torch.linalg.eigvalsh(matrix)[-1])
    operator = scipy.sparse.linalg.LinearOperator(
        (m, m), matvec=lambda v: torch.mv(matrix, torch.from_numpy(np.ascontiguousarray(v).ravel())).numpy(),
        dtype=np.float64)
    start = np.random.default_rng(0).standard_normal(m)  # not all-ones: that is a centred Gram's null space
    try:
        return float(scipy.sparse.linalg.eigsh(operator, k=1, which="LA", v0=start, tol=rtol,
                                               return_eigenvectors=False)[0])
    except scipy.sparse.linalg.ArpackError:  # includes ArpackNoConvergence
        return float(torch.linalg.eigvalsh(matrix)[-1])


def top_eigenvalue(a: torch.Tensor, rtol: float = TOP_EIGEN_RTOL) -> torch.Tensor:
    """Largest eigenvalue of each symmetric positive semi-definite matrix of ``a`` [b, m, m]; [b] float64
    on ``a``'s device. On the CPU :func:`largest_eigenvalue` matrix by matrix (the spectra's
    workers hand it one at a time), elsewhere :func:`lanczos_top_eigenvalue` all at once; both stop
    at a residual ``<= rtol`` times the value."""
    if a.device.type != "cpu":
        return lanczos_top_eigenvalue(a, rtol)
    return torch.tensor([largest_eigenvalue(matrix, rtol) for matrix in a], dtype=torch.float64)


def lanczos_top_eigenvalue(a: torch.Tensor, rtol: float = TOP_EIGEN_RTOL) -> torch.Tensor:
    """Largest eigenvalue of each symmetric matrix of ``a`` [b, m, m]; returns [b] float64.

    Lanczos in float64 with full reorthogonalisation, from a fixed pseudo-random start vector
    (deterministic). A matrix is done when its top Ritz value theta has residual
    ``|beta_k s_k| <= rtol * theta`` (then |lambda_max - theta| <= rtol * theta), or when its Krylov
    space is exhausted; one not converged after 96 steps is handed to ``eigvalsh``. Each matrix's
    value is that of its own first converged check, so it does not depend on the others in ``a``.
    """
    a = a.to(torch.float64)
    b, m, _ = a.shape
    steps = min(m, _LANCZOS_MAX_STEPS)
    scale = torch.linalg.matrix_norm(a).clamp_min(torch.finfo(torch.float64).tiny)  # >= |lambda| for all
    start = torch.randn(m, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(a.device)
    q = (start / start.norm()).expand(b, m).clone()
    basis = torch.zeros(b, steps, m, dtype=torch.float64, device=a.device)
    alphas, betas = [], []
    top = torch.full((b,), math.nan, dtype=torch.float64, device=a.device)
    settled = torch.zeros(b, dtype=torch.bool, device=a.device)
    for k in range(1, steps + 1):
        basis[:, k - 1] = q
        w = torch.bmm(a, q.unsqueeze(-1)).squeeze(-1)
        alphas.append((w * q).sum(dim=1))
        used = basis[:, :k]
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough")
            w = w - torch.bmm(used.transpose(1, 2), torch.bmm(used, w.unsqueeze(-1))).squeeze(-1)
        beta = w.norm(dim=1)
        betas.append(beta)
        exhausted = (beta <= 1e-13 * scale) | (k == m)  # an invariant subspace: the Ritz values are exact
        if k % _LANCZOS_CHECK == 0 or k == steps or bool((exhausted & ~settled).any()):
            theta, residual = _top_ritz(alphas, betas)
            # each matrix keeps the value of its own first converged check, whatever the others need
            done = ~settled & (exhausted | (residual <= rtol * theta.abs() + 1e-13 * scale))
            top[done], settled = theta[done], settled | done
            if bool(settled.all()):
                return top
        q = w / beta.clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(1)
    top[~settled] = torch.linalg.eigvalsh(a[~settled])[:, -1]
    return top


def _top_ritz(alphas: list[torch.Tensor], betas: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Top eigenvalue of the Lanczos tridiagonal T_k and its residual bound beta_k |s_k|."""
    tri = torch.diag_embed(torch.stack(alphas, dim=1))
    if len(alphas) > 1:
        off = torch.diag_embed(torch.stack(betas[:-1], dim=1), offset=1)
        tri = tri + off + off.transpose(1, 2)
    values, vectors = torch.linalg.eigh(tri)
    return values[:, -1], betas[-1] * vectors[:, -1, -1].abs()


def spectrum_from_gram(gram: torch.Tensor, mean: torch.Tensor, n: int, trace: torch.Tensor) -> dict[str, torch.Tensor]:
    """MEV, singular-value entropy, effective rank and HF/LF ratio of b token matrices of n rows.

    gram [b, m, m] and mean [b, D] from :func:`gram_of_rows`; trace [b] = sum of squared token
    norms (float64). One ``eigvalsh`` of G (in G's dtype) for the entropy and MEV, a Lanczos top
    eigenvalue of the centred G for HF/LF. Returns ``{key: [b] float64}`` for ``SPECTRAL_KEYS``.
    """
    eig = torch.linalg.eigvalsh(gram).clamp_min(0.0).double()
    sv = eig.sqrt()
    p = sv / sv.sum(dim=1, keepdim=True)
    entropy = -(p * torch.log(p.where(p > 0, torch.ones_like(p)))).sum(dim=1)
    top_centred = top_eigenvalue(centred_gram(gram, mean, n)).clamp_min(0.0)
    low = torch.linalg.vector_norm(mean.double(), dim=-1) * math.sqrt(n)
    return {"mev": eig[:, -1] / trace.double(), "sv_entropy": entropy, "effective_rank": entropy.exp(),
            "hf_lf_ratio": top_centred.sqrt() / low}


def spectrum_of_rows(x: torch.Tensor, trace: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`spectrum_from_gram` of token rows x [b, n, D] (the Gram matrices formed here)."""
    gram, mean = gram_of_rows(x)
    return spectrum_from_gram(gram, mean, x.shape[1], trace)


def spectrum_of_products(upper: torch.Tensor, counted: torch.Tensor, norms: torch.Tensor, mean: torch.Tensor,
                         trace: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`spectrum_from_gram` of one sequence from its unit rows' products (n <= D).

    upper [S, S]: u_i . u_j on and above the diagonal (zeros below); counted [S] bool; norms [S];
    mean [D] of the counted rows; trace [1]. The Gram matrix is G_ij = |x_i| |x_j| u_i . u_j over
    the counted rows.
    """
    index = counted.nonzero().squeeze(1)
    products = upper.index_select(0, index).index_select(1, index)
    scale = norms.index_select(0, index)
    gram = (products + products.triu(1).transpose(0, 1)) * scale.unsqueeze(1) * scale.unsqueeze(0)
    return spectrum_from_gram(gram.unsqueeze(0), mean.unsqueeze(0), len(index), trace)


class WorkerPool:
    """Threads that each use one torch thread (set once, when the worker starts), for independent jobs:
    they share the cores without the barriers of multi-threaded operations."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        threads = torch.get_num_threads()
        # In a forked child torch replaces its inherited thread pool at the next set_num_threads, and
        # two threads doing that at once can get none ("Invalid thread pool!"): do it here, alone.
        torch.set_num_threads(threads)
        ready = threading.Barrier(workers + 1)
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="condense-worker",
                                           initializer=_start_worker, initargs=(ready,))
        for _ in range(workers):  # every thread now, each blocked in its initializer until all are ready
            self.executor.submit(int)
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            self.executor.shutdown(wait=False, cancel_futures=True)
            raise RuntimeError("a condense worker thread failed to start (its error is logged above)") from None
        torch.set_num_threads(threads)  # the workers' setting is also torch's default for new threads

    def submit(self, function, *tensors: torch.Tensor | int) -> Future:
        """Queue ``function`` (one of this module's ``spectrum_*``) on CPU copies of its arguments."""
        return self.executor.submit(function, *(t.cpu() if isinstance(t, torch.Tensor) else t for t in tensors))


def _start_worker(ready: threading.Barrier) -> None:
    # torch reads its thread count for a thread at that thread's first parallel operation (from a
    # process-wide default that any thread's set_num_threads changes): do one first, then set 1.
    # That operation also gives each worker an OpenMP team of its own, so libgomp manages more
    # threads than there are cores and waits with short spins instead of long ones: the whole
    # process's forward pass then keeps its speed beside a busy neighbour (measured on 2 cores, a
    # bare SmolLM2 forward pass of 10 x 512 tokens beside a busy process: 54.9 s, 29.6 s once this
    # pool exists; idle, 15-17 s either way)
    try:
        torch.zeros(1 << 16).add_(1)
        torch.set_num_threads(1)
    except BaseException:
        ready.abort()  # the pool's constructor then raises instead of waiting for this thread forever
        raise
    ready.wait()


_pools: dict[int, WorkerPool] = {}
_pools_lock = threading.Lock()


def _forget_the_parents_pools() -> None:
    global _pools_lock
    _pools.clear()  # a forked child has none of the parent's threads
    _pools_lock = threading.Lock()  # and another thread may have held this one at the fork


os.register_at_fork(after_in_child=_forget_the_parents_pools)


def worker_pool(workers: int | None = None) -> WorkerPool:
    """The process's :class:`WorkerPool` of ``workers`` threads (default: torch's thread count).

    ``submit(spectrum_function, *tensors)`` returns a Future of the function's ``{key: [b] tensor}``
    dict; ``executor`` takes any other job. Jobs must not wait for other jobs of the same pool.
    """
    workers = max(1, workers or torch.get_num_threads())
    with _pools_lock:
        if workers not in _pools:
            _pools[workers] = WorkerPool(workers)
        return _pools[workers]
