"""Running the probe's own measurements on one torch thread."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["one_torch_thread"]

T = TypeVar("T")


def one_torch_thread(function: Callable[..., T]) -> Callable[..., T]:
    """Run ``function`` with one torch thread (then restore the count).

    The measurements are many small operations; on several threads each one ends in a barrier,
    and when another process competes for the cores a barrier can wait a whole scheduler time
    slice: measured here, 100x slower arccos and matmuls on a machine only 1.5x oversubscribed.
    One thread also makes the numbers independent of the thread count (reductions split by
    thread sum in another order), so a run is reproducible to the byte on any machine load.
    """

    @functools.wraps(function)
    def single(*args, **kwargs):
        threads = torch.get_num_threads()
        if threads == 1:
            return function(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return function(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return single
