"""Topic names, message keys and header names: the parts of the wire that are not a body.

Every producer and consumer, in any language, agrees on these; they are listed in the README.
Deployments may rename topics through settings; these are the defaults.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_TOPICS",
    "HEADER_CONTENT_TYPE",
    "HEADER_CORRELATION_ID",
    "HEADER_REPLY_TOPIC",
    "HEADER_SCHEMA_VERSION",
    "TOPIC_DEAD_LETTERS",
    "TOPIC_PRODUCTS",
    "TOPIC_SEARCH_REPLIES",
    "TOPIC_SEARCH_REQUESTS",
    "TOPIC_USER_EVENTS",
]

TOPIC_PRODUCTS: Final = "shopvec.products"
"""Product upserts and deletes, keyed by product id (so one product's events stay in order)."""

TOPIC_USER_EVENTS: Final = "shopvec.user-events"
"""Views, clicks, carts, purchases, keyed by user id."""

TOPIC_SEARCH_REQUESTS: Final = "shopvec.search.requests"
"""Search requests; the reply goes to the topic the request names."""

TOPIC_SEARCH_REPLIES: Final = "shopvec.search.replies"
"""A shared reply topic for clients that do not bring their own."""

TOPIC_DEAD_LETTERS: Final = "shopvec.dead-letters"
"""Messages no worker could process, wrapped in a DeadLetter with the reason."""

DEFAULT_TOPICS: Final = {
    "products": TOPIC_PRODUCTS,
    "user_events": TOPIC_USER_EVENTS,
    "search_requests": TOPIC_SEARCH_REQUESTS,
    "search_replies": TOPIC_SEARCH_REPLIES,
    "dead_letters": TOPIC_DEAD_LETTERS,
}

HEADER_CORRELATION_ID: Final = "correlation-id"
"""On a request and its reply: the request id, so a client matches replies to requests."""

HEADER_REPLY_TOPIC: Final = "reply-topic"
"""On a request: where to send the reply (the body's reply_topic wins when both are set)."""

HEADER_SCHEMA_VERSION: Final = "schema-version"
"""On every message shopvec writes: the body's contract version."""

HEADER_CONTENT_TYPE: Final = "content-type"
"""Always application/json for bodies shopvec writes."""
