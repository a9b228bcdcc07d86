"""The one settings object: the only place that reads the environment (prefix SHOPVEC_).

Nested sections use a double underscore: SHOPVEC_KAFKA__BOOTSTRAP_SERVERS, SHOPVEC_MILVUS__URI.
With no broker or Milvus configured, the embedded stack's loopback addresses are used.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.wire import (
    TOPIC_DEAD_LETTERS,
    TOPIC_PRODUCTS,
    TOPIC_SEARCH_REPLIES,
    TOPIC_SEARCH_REQUESTS,
    TOPIC_USER_EVENTS,
)

__all__ = [
    "BehaviourSettings",
    "EncoderSettings",
    "HttpSettings",
    "ImageFetchSettings",
    "IndexerSettings",
    "KafkaSettings",
    "MilvusSettings",
    "OpsSettings",
    "QuerySettings",
    "Settings",
    "StackSettings",
    "TopicSettings",
]

log = logging.getLogger(__name__)


class _Section(BaseModel):
    """A section of the settings. No number in them may be NaN or infinite: an infinite weight
    or limit passes a lower bound and then turns scores into NaN or waits into forever."""

    model_config = ConfigDict(allow_inf_nan=False)


class TopicSettings(_Section):
    products: str = TOPIC_PRODUCTS
    user_events: str = TOPIC_USER_EVENTS
    search_requests: str = TOPIC_SEARCH_REQUESTS
    search_replies: str = TOPIC_SEARCH_REPLIES
    dead_letters: str = TOPIC_DEAD_LETTERS
    partitions: dict[str, int] = Field(
        default_factory=lambda: {
            "products": 4,
            "user_events": 4,
            "search_requests": 4,
            "search_replies": 1,
            "dead_letters": 1,
        }
    )
    replication_factor: int = 1

    def all(self) -> dict[str, str]:
        return {
            "products": self.products,
            "user_events": self.user_events,
            "search_requests": self.search_requests,
            "search_replies": self.search_replies,
            "dead_letters": self.dead_letters,
        }


EMBEDDED_PARTITION_RECORDS = 5_000
"""On the embedded broker a fetch slows with every record batch before it in its partition,
and from about 20,000 the request/reply path's short fetches return nothing
(docs/benchmarks.md, "The embedded broker"); a request or a reply is a batch of one. The
request/reply path's topics are replaced before a partition holds more than this."""


class KafkaSettings(_Section):
    bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port]; unset means the embedded broker"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    client_id: str = "shopvec"
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    fetch_wait_max_ms: int | None = Field(
        default=None,
        ge=0,
        description="the longest a fetch waits for data; unset: 10 against a configured "
        "broker, which answers as soon as data arrives, and 2 against the embedded one, "
        "which holds every fetch for the whole wait",
    )
    reply_topic_records: int | None = Field(
        default=None,
        ge=0,
        description="a search client's own reply topic is replaced by a new one after this "
        "many replies, and deleted once the searches sent to it are answered or given up; 0: "
        "never; unset: 5000 against the embedded broker, which slows with every batch a "
        "partition holds and deletes no records, never against Kafka, whose retention does",
    )
    request_topic_records: int | None = Field(
        default=None,
        ge=0,
        description="once a partition of the search requests topic holds this many records, "
        "searches move on to a new generation of the topic, and the old one is deleted once "
        "read (shopvec.kafka.generations); 0: never; unset: 5000 against the embedded broker, "
        "never against Kafka",
    )
    extra: dict[str, str] = Field(
        default_factory=dict, description="further librdkafka properties, passed through"
    )
    drain_timeout_s: float = Field(
        default=45.0,
        gt=0,
        description="how long a worker's rebalance or shutdown waits for its batches in "
        "flight; what is unfinished then is done again by the partition's next owner",
    )
    dead_letter_max_bytes: int = Field(
        default=256 * 1024,
        ge=4096,
        description="the most a dead letter's body takes: beyond it the original is cut, its "
        "size and SHA-256 kept (Kafka's default max.message.bytes is about 1 MB)",
    )


class MilvusSettings(_Section):
    uri: str | None = Field(
        default=None, description="http(s)://host:port of Milvus; unset means the embedded one"
    )
    token: SecretStr | None = None
    db_name: str = "default"
    collection: str = Field(default="products", description="the alias searches go through")
    users_collection: str = "users"
    timeout_s: float = Field(default=15.0, gt=0)
    index_type: Literal["HNSW", "IVF_FLAT", "FLAT"] = "HNSW"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    search_ef: int = 128


class EncoderSettings(_Section):
    backend: Literal["offline", "clip"] = Field(
        default="offline",
        description="offline: EfficientNet-Lite0 + multilingual USE, weights from installed "
        "packages; clip: a transformers CLIP-family checkpoint from model_path",
    )
    model_path: str | None = Field(default=None, description="folder or hub id (clip backend)")
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1 ...")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    threads: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, ge=1, le=1024)
    fusion: Literal["weighted", "concat", "attention"] = Field(
        default="attention",
        description="attention: the words attend over the photos' regions (docs/evaluation.md); "
        "weighted: the photos pooled, then mixed with the words; concat: side by side",
    )
    image_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    photo_weighting: Literal["confidence", "agreement", "fixed"] = Field(
        default="confidence",
        description="a photo's weight in the fused vector: image_weight scaled by the "
        "encoder's confidence in it (confidence), by that and by its agreement with the words "
        "(agreement), or image_weight alone (fixed)",
    )
    metric: Literal["COSINE", "L2"] = "COSINE"
    alignment_path: str | None = Field(
        default=None,
        description="a photo-to-words alignment head saved by `shopvec align fit` (empty or "
        "unset: none); it must have been fitted on this encoder's version",
    )


class ImageFetchSettings(_Section):
    allow_hosts: list[str] = Field(
        default_factory=list, description="if set, only these hosts (or *.suffix) may be fetched"
    )
    allow_private_networks: bool = Field(
        default=False, description="permit loopback and private addresses (tests, on-prem CDNs)"
    )
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    timeout_s: float = Field(default=5.0, gt=0)
    max_pixels: int = Field(default=40_000_000, ge=1)
    max_side: int = Field(
        default=512,
        ge=64,
        description="decoded photos are shrunk to at most this many pixels a side: the "
        "encoders (224 to 336), colour words (64) and thumbnails (96) all work below it, and "
        "a product's 16 photos at max_pixels would otherwise hold 2 GB",
    )
    max_redirects: int = Field(default=3, ge=0)


class IndexerSettings(_Section):
    group_id: str = "shopvec-indexer"
    batch_size: int = Field(
        default=32,
        ge=1,
        description="photos a batch holds at most (a product without photos counts one; a "
        "product of more photos is a batch of its own)",
    )
    batch_wait_ms: int = Field(default=200, ge=0)
    flush_rows: int = Field(
        default=5000, ge=1, description="seal written rows into the index after this many"
    )
    flush_interval_s: float = Field(
        default=600.0,
        gt=0,
        description="or after this long, when anything was written (Milvus seals an idle "
        "segment after 10 minutes itself; each flush starts index builds, which on one "
        "machine take the encoder's cores)",
    )
    flush_quiet_s: float = Field(
        default=5.0,
        gt=0,
        description="or once the indexer has had nothing in flight and written nothing for "
        "this long, when anything was written: new rows are sealed into indexed segments "
        "while nothing waits",
    )
    encode_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="batches encoded at once, each on a thread of its own, with the encoder's "
        "torch threads (SHOPVEC_ENCODER__THREADS, or the cores) shared out among them: on "
        "CPUs, whole batches side by side keep the cores as busy as one batch split across "
        "them, and lose only their own time to what shares the cores (the consumer, the "
        "broker, Milvus) where a split batch waits at every step for its slowest part. Only "
        "for an encoder that allows it (the offline one); others run one. 1 on a GPU",
    )
    max_event_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        description="larger product events are dead-lettered as oversize unread (send photos by "
        "URL rather than inline)",
    )


HybridScenario = Literal["text2image", "text2product", "cross"]
RetrievalMode = Literal["dense", "rrf", "weighted"]


def _default_retrieval() -> dict[HybridScenario, RetrievalMode]:
    return {"text2image": "rrf", "text2product": "weighted", "cross": "weighted"}


class QuerySettings(_Section):
    group_id: str = "shopvec-query"
    batch_size: int = Field(default=16, ge=1)
    batch_wait_ms: int = Field(default=2, ge=0)
    encoder_threads: int | None = Field(
        default=1,
        ge=1,
        description="torch threads of a query worker's encoder (unset: torch's own choice). "
        "One photo at a time gains little from a second thread, and a thread that waits for a "
        "busy core holds up the whole request: scale queries out with workers instead",
    )
    max_top_k: int = Field(default=100, ge=1)
    max_request_age_s: float = Field(
        default=30.0,
        gt=0,
        description="requests older than this are dropped unanswered: their clients gave up",
    )
    max_request_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="larger requests are dead-lettered as oversize unread",
    )
    reply_topic_patterns: list[str] | None = Field(
        default=None,
        description="the only topics replies may go to (shell patterns); unset: the replies "
        "topic and <replies topic>.*, where clients create their own",
    )
    retrieval: dict[HybridScenario, RetrievalMode] = Field(
        default_factory=_default_retrieval,
        description="per scenario with words: dense (vectors only), or hybrid (vectors and "
        "Milvus full-text search together) merged by Milvus's rrf or weighted ranker; a "
        "scenario left out is dense",
    )
    rrf_k: int = Field(default=60, ge=1, description="the rrf ranker's k: 1 / (k + rank)")
    lexical_weight: float = Field(
        default=0.4,
        ge=0.0,
        le=1.0,
        description="the weighted ranker's weight of the full-text leg (the vector's: 1 minus "
        "it) for a query whose words one product holds whole; a query covered in part gets it "
        "times its coverage cubed (shopvec.search.lexical)",
    )
    photo_crops: bool = Field(
        default=False,
        description="photo queries (image2image) also searched as a grid of crops of their "
        "photo, each product scored by its best crop: for shoppers' photos, where the product "
        "is small or cut off on a cluttered background",
    )
    photo_neighbour_words: bool = Field(
        default=True,
        description="photo queries (image2image) re-ranked by the words of the products they "
        "resemble: each of the 100 nearest by the photo also scored by how close its words are "
        "to the mean words of the 10 nearest (shopvec.search.neighbour_words)",
    )
    translate_chinese: bool = Field(
        default=True,
        description="a query's Chinese words also searched by their English senses from the "
        "CC-CEDICT dictionary, for its vector and its full-text leg (shopvec.search.glossary): "
        "Chinese queries find products described in English; loaded as the worker starts",
    )
    photo_examples: int = Field(
        default=10,
        ge=0,
        le=100,
        description="words to photos (text2image) searched by example: each photo scored by "
        "its look against the photos of this many products whose words the query's match "
        "best, its own product left out (shopvec.search.photo_examples); 0: by the words' "
        "vector alone",
    )
    photo_neighbour_words_min_similarity: float = Field(
        default=0.7,
        ge=-1.0,
        le=1.0,
        description="the cosine of the photo query's nearest product at or above which its "
        "neighbours' words re-rank it: a photo farther from everything (a shopper's, on "
        "clutter) keeps the order of its photo alone; chosen for the offline encoder",
    )


class BehaviourSettings(_Section):
    """User behaviour: taste vectors, co-occurrence, popularity and personalised ranking."""

    group_id: str = "shopvec-behaviour"
    batch_size: int = Field(default=256, ge=1)
    batch_wait_ms: int = Field(default=200, ge=0)
    max_event_bytes: int = Field(
        default=64 * 1024, ge=1024, description="larger user events are dead-lettered as oversize"
    )
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "view": 0.5,
            "click": 1.0,
            "add_to_cart": 3.0,
            "remove_from_cart": -1.0,
            "wishlist": 2.0,
            "purchase": 5.0,
        },
        description="how much each event type moves a user's taste vector (negative: away)",
    )
    half_life_hours: float = Field(
        default=24.0 * 14, gt=0, description="taste vectors and popularity halve in this time"
    )
    pseudonym_key: SecretStr = Field(
        default=SecretStr("shopvec-development-key-change-me"),
        description="HMAC-SHA256 key that turns user ids into pseudonyms before anything is "
        "stored or logged",
    )
    previous_pseudonym_keys: list[SecretStr] = Field(
        default_factory=list,
        description="keys rotated out: still accepted for lookup and forget; a user found under "
        "one moves to the current key on their next event",
    )
    inactive_ttl_days: float = Field(
        default=365.0, gt=0, description="users with no event for this long are dropped"
    )
    expiry_interval_s: float = Field(default=300.0, gt=0)
    max_future_s: float = Field(
        default=300.0,
        ge=0,
        description="an interaction stamped further ahead of the worker's clock is refused: a "
        "timestamp years ahead moved the shared popularity's clock there and froze the user's",
    )
    recent_event_ids: int = Field(
        default=256, ge=8, description="event ids remembered per user, so a replay counts once"
    )
    cf_window: int = Field(
        default=50, ge=2, description="a user's last distinct items that co-occur with each other"
    )
    cf_neighbours: int = Field(
        default=100,
        ge=1,
        le=200,
        description="co-occurring items kept per item (bounded storage; a row holds up to twice "
        "as many, of ids up to 128 bytes, in a JSON field Milvus holds to 64 KiB)",
    )
    popular_per_category: int = Field(
        default=200, ge=1, le=200, description="items kept per category row, as cf_neighbours"
    )
    rerank_factor: int = Field(
        default=3, ge=1, description="a personalised search ranks top_k x this many candidates"
    )
    # Chosen on the validation split of `shopvec bench behaviour` (docs/behaviour.md).
    weight_query: float = Field(default=1.0, ge=0)
    weight_taste: float = Field(default=0.1, ge=0)
    weight_cf: float = Field(default=1.0, ge=0)
    weight_popularity: float = Field(
        default=0.3, ge=0, description="recommendations only; searches are ranked by the query"
    )


class OpsSettings(_Section):
    """The worker's HTTP side: /healthz (alive), /readyz (connected and consuming), /metrics."""

    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535, description="0 disables the endpoint")
    liveness_stall_s: float = Field(
        default=120.0,
        gt=0,
        description="/healthz fails once the consume loop has shown no progress for this long "
        "(waiting out a transient fault counts as progress)",
    )


class HttpSettings(_Section):
    """The HTTP API and search page (`shopvec serve`): searches forwarded to the query workers
    over Kafka, products read from Milvus."""

    host: str = Field(default="127.0.0.1", description="loopback unless set otherwise")
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(
        default=9 * 1024 * 1024,
        ge=1024,
        description="larger request bodies are refused with 413 before they are read whole",
    )
    timeout_s: float = Field(
        default=10.0, gt=0, description="how long a search waits for its reply before a 504"
    )
    max_body_bytes_in_flight: int = Field(
        default=48 * 1024 * 1024,
        ge=1024,
        description="the request bodies in progress together; one that would pass it gets 503 "
        "at once (a search with a photo holds several times its body while it waits)",
    )


class StackSettings(_Section):
    home: Path = Field(default=Path(".shopvec"), description="pids, logs and Milvus data")
    kafka_port: int = 19092
    milvus_port: int = 19531
    kafka_compat_port: int = Field(
        default=19093,
        ge=0,
        description="a listener for Kafka clients on librdkafka 2.1.1 and older (kcat 1.7.1) "
        "in front of the embedded broker; 0: none",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SHOPVEC_",
        env_nested_delimiter="__",
        env_file=None,
        extra="ignore",
        allow_inf_nan=False,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)
    encoder: EncoderSettings = Field(default_factory=EncoderSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    images: ImageFetchSettings = Field(default_factory=ImageFetchSettings)
    indexer: IndexerSettings = Field(default_factory=IndexerSettings)
    query: QuerySettings = Field(default_factory=QuerySettings)
    behaviour: BehaviourSettings = Field(default_factory=BehaviourSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    log_level: str = "INFO"
    blas_threads: int = Field(
        default=1,
        ge=0,
        description="threads of numpy's BLAS in a worker (OpenBLAS's helpers spin after every "
        "call); 0 leaves OpenBLAS to its own default",
    )
    malloc_keep_mb: int = Field(
        default=1024,
        ge=0,
        le=2047,
        description="freed memory under this size stays in the process for the next batch "
        "instead of going back to the kernel (glibc: shopvec.allocator); 0 leaves malloc as is",
    )

    @property
    def kafka_embedded(self) -> bool:
        return self.kafka.bootstrap_servers is None

    @property
    def milvus_embedded(self) -> bool:
        return self.milvus.uri is None

    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap_servers or f"127.0.0.1:{self.stack.kafka_port}"

    def fetch_wait_ms(self) -> int:
        """What a consumer's fetch waits: on the request/reply path the embedded broker adds
        up to this much at each hop, a Kafka broker does not."""
        if self.kafka.fetch_wait_max_ms is not None:
            return self.kafka.fetch_wait_max_ms
        return 2 if self.kafka_embedded else 10

    def reply_topic_records(self) -> int:
        """How many replies a client's own reply topic takes before it is replaced (0: no
        limit)."""
        if self.kafka.reply_topic_records is not None:
            return self.kafka.reply_topic_records
        return EMBEDDED_PARTITION_RECORDS if self.kafka_embedded else 0

    def request_topic_records(self) -> int:
        """Records a partition of the search requests topic takes before searches move on to
        a new generation of the topic (0: no limit, one topic)."""
        if self.kafka.request_topic_records is not None:
            return self.kafka.request_topic_records
        return EMBEDDED_PARTITION_RECORDS if self.kafka_embedded else 0

    def reply_topic_patterns(self) -> list[str]:
        if self.query.reply_topic_patterns is not None:
            return self.query.reply_topic_patterns
        return [self.topics.search_replies, f"{self.topics.search_replies}.*"]

    def milvus_uri(self) -> str:
        return self.milvus.uri or f"http://127.0.0.1:{self.stack.milvus_port}"

    def redacted(self) -> dict[str, Any]:
        """What is safe to log: SecretStr fields dump as '**********'."""
        return self.model_dump(mode="json")

    def environment(self) -> dict[str, str]:
        """The SHOPVEC_* variables from which Settings() in a child process rebuilds exactly
        these settings, one JSON value per section. Secrets are in clear: for the environment
        of a process this one starts, never for a log."""

        def plain(value: Any) -> Any:
            if isinstance(value, SecretStr):
                return value.get_secret_value()
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [plain(v) for v in value]
            return value

        out = {}
        for name, value in self.model_dump().items():
            value = plain(value)
            out[f"SHOPVEC_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return out
