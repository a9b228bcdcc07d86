"""Search: requests to replies (SearchService) and the Kafka loop that serves them."""

from shopvec.search.service import SearchService, filters_from_request
from shopvec.search.worker import QueryWorker

__all__ = ["QueryWorker", "SearchService", "filters_from_request"]
