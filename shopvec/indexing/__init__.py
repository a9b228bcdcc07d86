"""The indexer: product events in, product vectors written to the store."""

from shopvec.indexing.pipeline import ImageSource, IndexOutcome, ProductEventT, ProductIndexer
from shopvec.indexing.service import IndexerService

__all__ = [
    "ImageSource",
    "IndexOutcome",
    "IndexerService",
    "ProductEventT",
    "ProductIndexer",
]
