"""Analysis of trained and analytic continuous-depth models.

* :func:`fit_order`: the empirical convergence order of an error sequence.
* :func:`analyze_manifestations`: accuracy and errors against a reference of every
  ``(scheme, n_steps)`` manifestation of a trained model, fitted orders per block and
  scheme, an invariance summary (:class:`ManifestationReport`: table, CSV, JSON, plots).
* :func:`resnet_as_continuous`: a trained ResNet read as a piecewise-constant
  ``theta(t)`` with one cell per unit, so the same analysis applies to it.
* :func:`compress` / :func:`compress_run`: L2 projection onto fewer basis functions and
  steps, optional fine-tuning, and a :class:`CompressionReport` (parameters, accuracy,
  latency from :func:`measure_latency`, timed side by side).
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
