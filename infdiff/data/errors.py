"""Errors and warnings of the data package.

Every message names what failed (the file, or the config key with its value) and what was
expected, so a user can fix the configuration without reading the code.
"""

from __future__ import annotations


class DataError(ValueError):
    """A data set cannot be built or read (missing path, wrong format, bad config value)."""


class UnreadableImageError(DataError):
    """One stored image cannot be decoded; the datasets skip such images with a warning."""


class UpsampledImageWarning(UserWarning):
    """Images smaller than the requested size are upsampled, so they lack the detail of that size."""


class UnreadableImageWarning(UserWarning):
    """An image was skipped because it cannot be decoded (filter with this category)."""
