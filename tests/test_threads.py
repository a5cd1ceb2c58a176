"""The probe's measurements run on one torch thread, and the caller's thread count comes back."""

import pytest
import torch

from condense.probing.threads import one_torch_thread


def test_the_function_runs_on_one_thread_and_the_count_is_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert one_torch_thread(torch.get_num_threads)() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_count_is_restored_when_the_function_raises():
    before = torch.get_num_threads()
    torch.set_num_threads(2)

    def failing() -> None:
        raise ValueError("planted")

    try:
        with pytest.raises(ValueError, match="planted"):
            one_torch_thread(failing)()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
