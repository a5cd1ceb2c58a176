"""condense: measure embedding condensation in Transformer models.

>>> import condense
>>> result = condense.probe("smollm2-135m", layers="all", num_seqs=16)
>>> result.layers, result.trend, result.plot()
>>> result.save("results/smollm2"); condense.load("results/smollm2")

Names are imported on first use (:mod:`condense.lazy`): ``import condense`` costs milliseconds.
"""

from typing import TYPE_CHECKING

from condense.errors import CondenseError
from condense.lazy import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from condense.probing.probe import ProbeSettings, probe
    from condense.results import ProbeResult, load

__all__ = ["probe", "load", "ProbeResult", "ProbeSettings", "CondenseError", "__version__"]

lazy_exports(__name__, {"condense.probing.probe": ("probe", "ProbeSettings"), "condense.results": ("ProbeResult", "load")})
