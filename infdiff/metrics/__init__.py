"""Sample quality as the field measures it, offline: feature extractors, FID, KID, MMD, Vendi, precision/recall.

A layer beside ``train`` and ``data``.  Extractors (:data:`EXTRACTORS`: ``inception``, ``clip_vit_b_32``,
``random``) map images in [-1, 1] to features with their protocol's resize inside; FID is computed from
streaming float64 statistics, KID as an unbiased MMD² over subsets, the Riesz MMD as the CNO code does,
and :func:`score_images` gathers every metric of a sample set in one dict.
"""

from infdiff.metrics import clip, inception  # noqa: F401  (register their extractors)
from infdiff.metrics.distances import energy_distance, riesz_mmd, sliced_wasserstein
from infdiff.metrics.diversity import vendi_score
from infdiff.metrics.extractors import EXTRACTORS, ExtractorUnavailable, FeatureExtractor, RandomFeatures, features_of
from infdiff.metrics.fid import fid, frechet_distance, sqrtm_psd, trace_sqrt_product
from infdiff.metrics.kid import kid
from infdiff.metrics.precision_recall import precision_recall
from infdiff.metrics.sharpness import top_octave_energy
from infdiff.metrics.statistics import FeatureStatistics, cached_features
from infdiff.metrics.suite import score_images

__all__ = [
    "EXTRACTORS",
    "ExtractorUnavailable",
    "FeatureExtractor",
    "FeatureStatistics",
    "RandomFeatures",
    "cached_features",
    "energy_distance",
    "features_of",
    "fid",
    "frechet_distance",
    "kid",
    "precision_recall",
    "riesz_mmd",
    "score_images",
    "sliced_wasserstein",
    "sqrtm_psd",
    "top_octave_energy",
    "trace_sqrt_product",
    "vendi_score",
]
