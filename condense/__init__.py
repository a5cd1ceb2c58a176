"""condense: measure embedding condensation in Transformer models.

>>> import condense
>>> result = condense.probe("smollm2-135m", layers="all", num_seqs=16)
>>> result.layers, result.trend, result.plot()
>>> result.save("results/smollm2"); condense.load("results/smollm2")
"""

__version__ = "0.1.0"

from condense.errors import CondenseError
from condense.probing.probe import ProbeSettings, probe
from condense.results import ProbeResult, load

__all__ = ["probe", "load", "ProbeResult", "ProbeSettings", "CondenseError", "__version__"]
