"""Deterministic, step-indexed data for training runs (docs/spec-reference.md, RELIABILITY.md).

`build_source` turns a spec's data source into a `DataSource`; every batch depends only on the
data seed and the step, so resumed runs see exactly the batches an uninterrupted run would.
"""

from engine.data.base import Batch, DataSource
from engine.data.build import SETTINGS_TYPES, build_source
from engine.data.files import ImageArraysSettings
from engine.data.finite import DataRepeatWarning
from engine.data.synthetic import SyntheticImagesSettings, SyntheticTokensSettings
from engine.data.text import TextFilesSettings

__all__ = [
    "Batch",
    "DataRepeatWarning",
    "DataSource",
    "ImageArraysSettings",
    "SETTINGS_TYPES",
    "SyntheticImagesSettings",
    "SyntheticTokensSettings",
    "TextFilesSettings",
    "build_source",
]
