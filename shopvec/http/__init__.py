"""The HTTP face of shopvec: a JSON API and a search page, in front of the Kafka request/reply.

Searches go to the query workers over Kafka, on a reply topic this service owns, so query
capacity still scales with query workers; products are read from Milvus. `create_app` builds
the ASGI application from one Settings object and a backend (the real one on Kafka and Milvus,
or the in-memory one for tests).
"""

from shopvec.http.app import create_app
from shopvec.http.backend import Backend, BackendUnavailable, KafkaBackend
from shopvec.http.contract import ErrorBody, EventIn, ProductView, SearchQuery
from shopvec.http.memory import MemoryBackend

__all__ = [
    "Backend",
    "BackendUnavailable",
    "ErrorBody",
    "EventIn",
    "KafkaBackend",
    "MemoryBackend",
    "ProductView",
    "SearchQuery",
    "create_app",
]
