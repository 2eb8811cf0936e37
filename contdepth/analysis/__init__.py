"""Analysis of trained and analytic continuous-depth models.

* [`fit_order`][contdepth.analysis.fit_order]: the empirical convergence order of an error sequence.
* [`analyze_manifestations`][contdepth.analysis.analyze_manifestations]: accuracy and errors against a reference of every
  ``(scheme, n_steps)`` manifestation of a trained model, fitted orders per block and
  scheme, an invariance summary ([`ManifestationReport`][contdepth.analysis.ManifestationReport]: table, CSV, JSON, plots).
* [`resnet_as_continuous`][contdepth.analysis.resnet_as_continuous]: a trained ResNet read as a piecewise-constant
  ``theta(t)`` with one cell per unit, so the same analysis applies to it.
* [`compress`][contdepth.analysis.compress] / [`compress_run`][contdepth.analysis.compress_run]: L2 projection onto fewer basis functions and
  steps, optional fine-tuning, and a [`CompressionReport`][contdepth.analysis.CompressionReport] (parameters, accuracy,
  latency from [`measure_latency`][contdepth.analysis.measure_latency], timed side by side).
"""

from .compression import CompressionReport, compress, compress_run, count_parameters
from .convergence import fit_order
from .latency import Latency, measure_latency
from .manifestations import (
    DEFAULT_SCHEMES,
    DEFAULT_STEPS,
    Reference,
    aligned,
    analyze_manifestations,
    parse_reference,
    reference_manifestation,
)
from .reading import as_continuous, resnet_as_continuous
from .report import ManifestationReport, ManifestationRow, OrderRow

__all__ = [
    "CompressionReport", "Latency", "compress", "compress_run", "count_parameters", "measure_latency",
    "DEFAULT_SCHEMES", "DEFAULT_STEPS", "ManifestationReport", "ManifestationRow", "OrderRow", "Reference",
    "aligned", "analyze_manifestations", "as_continuous", "fit_order", "parse_reference", "reference_manifestation",
    "resnet_as_continuous",
]
