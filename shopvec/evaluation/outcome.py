"""What an evaluation run is asked (``EvalConfig``) and what it finds (``EvalReport``: a
``Block`` of scores per query set and scenario)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from typing import Any, Literal

from schemas.search import MAX_TOP_K
from shopvec.encoders.base import EncoderInfo
from shopvec.evaluation.metrics import DEFAULT_KS, Evaluation
from shopvec.fusion import FusionMethod, PhotoWeighting
from shopvec.similarity import Metric
from shopvec.store.base import VectorField

__all__ = [
    "FUSED_SCENARIOS",
    "FUSION_METHODS",
    "SCENARIOS",
    "Block",
    "EvalConfig",
    "EvalReport",
    "EvalScenario",
]

EvalScenario = Literal["text2image", "image2image", "text2text", "text2product", "cross"]
SCENARIOS: tuple[EvalScenario, ...] = (
    "text2image",
    "image2image",
    "text2text",
    "text2product",
    "cross",
)
FUSED_SCENARIOS: tuple[EvalScenario, ...] = ("text2product", "cross")
FUSION_METHODS: tuple[FusionMethod, ...] = ("weighted", "concat", "attention")


@dataclass(frozen=True)
class EvalConfig:
    fusions: tuple[FusionMethod, ...] = FUSION_METHODS
    image_weight: float = 0.5
    metric: Metric = "COSINE"
    index_type: str = "HNSW"
    scenarios: tuple[EvalScenario, ...] = SCENARIOS
    ks: tuple[int, ...] = DEFAULT_KS
    depth: int = 100
    """Results kept per query (after exclusions); MAP is computed over them."""
    index_batch: int = 32
    """Events per ``ProductIndexer.apply`` call: the indexer worker's micro-batch."""
    query_batch: int = 16
    """Requests per ``SearchService.search_many`` call: the query worker's batch."""
    alias_prefix: str = "eval"
    retrievals: tuple[Literal["dense", "hybrid"], ...] = ("dense", "hybrid")
    """For the scenarios with words: vectors only, and vectors with Milvus full-text search
    (a row named ``<method>+bm25``; only on stores with full-text fields)."""
    hybrid_rankers: dict[str, Literal["rrf", "weighted"]] = dataclass_field(
        default_factory=lambda: {
            "text2image": "rrf",
            "text2product": "weighted",
            "cross": "weighted",
        }
    )
    """The ranker of the ``+bm25`` rows, per scenario."""
    rrf_k: int = 60
    lexical_weight: float = 0.05
    weightings: tuple[PhotoWeighting, ...] = ("confidence",)
    """How each fusion method weighs a photo (``shopvec.fusion``): a collection per method and
    weighting, rows named ``<method><weight>`` plus ``agree`` or ``fixed``."""
    photo_crops: tuple[bool, ...] = (False,)
    """Photo queries (image2image) searched whole (False), and whole and as crops (True: a row
    named ``visual_vec+crops``; see shopvec.search.photo_crops)."""
    photo_words: tuple[bool, ...] = (False,)
    """Photo queries (image2image) ranked by the photo (False), and re-ranked by the words of
    the products they resemble too (True: a row named ``visual_vec+words``; see
    shopvec.search.neighbour_words)."""
    glossary: tuple[bool, ...] = (False,)
    """Queries with words searched as written (False), and with their Chinese words' English
    senses too (True: rows named ``<row>+en``; see shopvec.search.glossary)."""
    photo_examples: tuple[bool, ...] = (False,)
    """Words to photos (text2image) searched by the words' vector (False), and by example too
    (True: a row named ``image_vec+bm25+en+examples``, on the most complete service asked
    for; see shopvec.search.photo_examples)."""

    def __post_init__(self) -> None:
        if not self.fusions:
            raise ValueError("at least one fusion method is needed")
        if not self.weightings or not self.photo_crops:
            raise ValueError("at least one photo weighting and one photo-crop choice are needed")
        if not 1 <= self.depth <= MAX_TOP_K:
            raise ValueError(f"depth must be between 1 and {MAX_TOP_K}, not {self.depth}")
        if max(self.ks) > self.depth:
            raise ValueError(f"the largest cut-off ({max(self.ks)}) exceeds depth {self.depth}")
        unknown = set(self.scenarios) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {list(SCENARIOS)}")


@dataclass
class Block:
    """One query set in one scenario: a row (an ``Evaluation``) per method."""

    query_set: str
    scenario: EvalScenario
    field: VectorField
    pool: int
    """Products the field can return: the candidates a random ranking draws from."""
    queries: int
    chance: dict[str, float]
    methods: dict[str, Evaluation] = dataclass_field(default_factory=dict)
    errors: dict[str, int] = dataclass_field(default_factory=dict)
    """Queries answered with an error, per method (scored as empty rankings)."""
    seconds: dict[str, float] = dataclass_field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.query_set}/{self.scenario}"


@dataclass
class EvalReport:
    dataset: str
    encoder: EncoderInfo
    config: EvalConfig
    corpus: int
    indexed: int
    with_image: int
    with_text: int
    failed: dict[str, str]
    """Corpus documents the indexer refused (an undecodable photo, say), with the reason."""
    blocks: list[Block]
    index_seconds: dict[str, float]
    encode_seconds: float

    def results(self) -> dict[str, dict[str, dict[str, float]]]:
        """``block name -> method -> metric -> mean``, as ``render_table`` takes it."""
        return {b.name: {m: dict(e.means) for m, e in b.methods.items()} for b in self.blocks}

    def chance(self) -> dict[str, dict[str, float]]:
        return {b.name: dict(b.chance) for b in self.blocks}

    def to_dict(self) -> dict[str, Any]:
        config = asdict(self.config)
        return {
            "dataset": self.dataset,
            "encoder": {
                "model_id": self.encoder.model_id,
                "version": self.encoder.version,
                "joint_dim": self.encoder.joint_dim,
                "visual_dim": self.encoder.visual_dim,
            },
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
            "corpus": {
                "documents": self.corpus,
                "indexed": self.indexed,
                "with_image": self.with_image,
                "with_text": self.with_text,
                "failed": self.failed,
            },
            "index_seconds": self.index_seconds,
            "encode_seconds": self.encode_seconds,
            "blocks": [
                {
                    "name": b.name,
                    "query_set": b.query_set,
                    "scenario": b.scenario,
                    "field": b.field,
                    "pool": b.pool,
                    "queries": b.queries,
                    "chance": b.chance,
                    "methods": {
                        m: {
                            "means": e.means,
                            "scored": e.n_queries,
                            "skipped": len(e.skipped),
                            "errors": b.errors.get(m, 0),
                            "seconds": b.seconds.get(m, 0.0),
                        }
                        for m, e in b.methods.items()
                    },
                }
                for b in self.blocks
            ],
        }
