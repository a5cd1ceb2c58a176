"""Probe results: the in-memory object and its folder on disk."""

from condense.results.result import HIST_EDGES, RESULT_FORMAT, ProbeResult, load

__all__ = ["ProbeResult", "load", "RESULT_FORMAT", "HIST_EDGES"]
