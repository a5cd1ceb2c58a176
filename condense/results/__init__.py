"""Probe results: the in-memory object and its folder on disk."""

from typing import TYPE_CHECKING

from condense.lazy import lazy_exports

if TYPE_CHECKING:
    from condense.results.result import HIST_EDGES, RESULT_FORMAT, ProbeResult, load

__all__ = ["ProbeResult", "load", "RESULT_FORMAT", "HIST_EDGES"]

lazy_exports(__name__, {"condense.results.result": tuple(__all__)})
