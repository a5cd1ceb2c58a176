"""The isotropic Gaussian baseline of a probe, computed once per shape and kept in the condense cache.

:func:`condense.metrics.gaussian_baseline` simulates eight seeded Gaussian sequences through the
probe's own accumulators: 0.3 s on one core for 512 tokens of 576 dimensions, paid again by every
probe of the same shape. Its values depend only on its arguments and on the code and libraries
that compute them, so they are stored as JSON under ``$CONDENSE_CACHE/baselines/``, in a file
whose name hashes all of those: the source of ``condense.metrics``, the torch and numpy versions
and the CPU capability torch dispatches to (its kernels, hence the last bits, differ between
AVX2 and AVX-512). A changed library or metric therefore never reads an old value. A cache that
cannot be read or written is skipped: the baseline is then computed, as without a cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

import condense.metrics
from condense.metrics.trend import gaussian_baseline
from condense.models.cache_folders import BASELINES_FOLDER, cache_dir
from condense.probing.threads import one_torch_thread

__all__ = ["cached_gaussian_baseline", "baseline_key"]


def cached_gaussian_baseline(n_tokens: int, dim: int, seed: int = 0) -> dict[str, float]:
    """:func:`condense.metrics.gaussian_baseline` (n_tokens, dim, seed=seed), from the cache when it
    holds this shape for this code, else computed on one torch thread (as the probe measures) and stored."""
    path = cache_dir() / BASELINES_FOLDER / f"gaussian-{n_tokens}x{dim}-seed{seed}-{baseline_key(n_tokens, dim, seed)}.json"
    stored = _read(path)
    if stored is not None:
        return stored
    values = one_torch_thread(gaussian_baseline)(n_tokens, dim, seed=seed)
    _write(path, values)
    return values


def baseline_key(n_tokens: int, dim: int, seed: int) -> str:
    """16 hex digits of the SHA-256 of the arguments, the metrics' source and the numeric libraries."""
    identity = json.dumps({"function": "gaussian_baseline", "args": [n_tokens, dim, seed], "code": _metrics_source(),
                           "torch": torch.__version__, "numpy": np.__version__,
                           "cpu": torch.backends.cpu.get_cpu_capability()})
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


@functools.cache
def _metrics_source() -> str:
    digest = hashlib.sha256()
    for file in sorted(Path(condense.metrics.__file__).parent.glob("*.py")):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def _read(path: Path) -> dict[str, float] | None:
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, unreadable or damaged: computed again and rewritten
    if not isinstance(values, dict) or not all(isinstance(v, (int, float)) for v in values.values()):
        return None
    return {key: float(value) for key, value in values.items()}


def _write(path: Path, values: dict[str, float]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(handle, "w") as file:  # floats as repr: read back bit for bit (NaN as NaN)
                json.dump({key: float(value) for key, value in values.items()}, file, allow_nan=True)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)  # readers see the old file or the whole new one, never a part
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a read-only or full cache only costs the next probe the computation
