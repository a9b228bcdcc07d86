"""Runs an evaluation set through the real pipeline: index the corpus, search, score.

The corpus becomes product events (``EvalDataset.to_product_events``) that ``ProductIndexer``
writes to a ``ProductStore``, one collection per fusion method; the queries become
``SearchRequest``s that ``SearchService`` answers, as the query worker would. So the vectors
scored are the vectors in the store, searched through its index.

Scenarios, each scored per query set (the prefix of the query ids):

- ``text2image``: text queries against ``image_vec`` (photos in the joint space);
- ``image2image``: photo queries against ``visual_vec``;
- ``text2text``: text queries against ``text_vec``. No search request reaches that field; it is
  here as the words-only baseline that the fused vectors should at least match;
- ``text2product``: text queries against ``fused_vec``, once per fusion method;
- ``cross``: queries with words and a photo against ``fused_vec``, once per fusion method.

Each fusion method gets a collection per photo weighting asked for (rows ``weighted50``,
``weighted50agree``, ``weighted50fixed``...), and photo queries can be searched whole and as
crops too (a row ``visual_vec+crops``; see shopvec.search.photo_crops) and re-ranked by the
words of the products they resemble (``visual_vec+words``; shopvec.search.neighbour_words).

The scenarios with words through the service (text2image, text2product, cross) are scored dense
(vectors only) and, on a store with full-text fields, hybrid as well (vectors and Milvus BM25
search together, a row named ``<method>+bm25``; see shopvec.search.lexical), each also with the
Chinese words' English senses (rows ``+en`` and ``+bm25+en``; shopvec.search.glossary).
Words to photos is also searched by example (a row ``+examples`` on the most complete of those
services; shopvec.search.photo_examples).

Each ranking is cut at ``depth`` after the query's excluded documents are dropped, and MAP is
computed over that depth; chance levels are those of a random ranking of the same depth over
the products that the scenario's field can return (its pool: products with a photo for the photo
fields, with words for ``text_vec``, every indexed product for ``fused_vec``), averaged over the
queries with a relevant product in that pool.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.product import ProductUpsert
from schemas.search import MAX_TOP_K, Scenario, SearchRequest
from shopvec.encoders.base import Encoder
from shopvec.evaluation.dataset import EvalDataset, EvalQuery
from shopvec.evaluation.metrics import chance_levels, evaluate
from shopvec.evaluation.outcome import (
    FUSED_SCENARIOS,
    FUSION_METHODS,
    SCENARIOS,
    Block,
    EvalConfig,
    EvalReport,
    EvalScenario,
)
from shopvec.fusion import Fusion, FusionMethod, PhotoWeighting
from shopvec.indexing.pipeline import ImageSource, ProductIndexer
from shopvec.search.glossary import Glossary, cedict_glossary
from shopvec.search.lexical import LEXICAL_FIELD, RetrievalConfig
from shopvec.search.neighbour_words import NeighbourWords
from shopvec.search.photo_crops import PhotoCrops
from shopvec.search.photo_examples import PhotoExamples
from shopvec.search.service import SearchService
from shopvec.store.base import CollectionSpec, ProductStore, SearchFilter, VectorField

__all__ = [
    "FUSED_SCENARIOS",
    "FUSION_METHODS",
    "SCENARIOS",
    "Bar",
    "Block",
    "EvalConfig",
    "EvalReport",
    "EvalScenario",
    "Progress",
    "StoreFactory",
    "run_evaluation",
]

_FIELD: dict[EvalScenario, VectorField] = {
    "text2image": "image_vec",
    "image2image": "visual_vec",
    "text2text": "text_vec",
    "text2product": "fused_vec",
    "cross": "fused_vec",
}

# The request scenario of each evaluation scenario that goes through SearchService.
_SERVICE_SCENARIO: dict[EvalScenario, Scenario] = {
    "text2image": "text2image",
    "image2image": "image2image",
    "text2product": "text2product",
    "cross": "cross",
}

StoreFactory = Callable[[CollectionSpec], ProductStore]
"""Builds the store of one collection. The runner calls its ``ensure()`` before writing, and its
``settle()``, if it has one, once the whole corpus is written (see ``stores.EvalMilvusStore``)."""


class Bar(Protocol):
    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


Progress = Callable[[int, str], Bar]
"""Opens a progress bar of a total and a description (``tqdm`` fits); by default, none."""


class _NoBar:
    def update(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


def _no_bar(total: int, desc: str) -> Bar:
    return _NoBar()


def _scenarios_of(query: EvalQuery) -> tuple[EvalScenario, ...]:
    if query.text and query.image:
        return ("cross",)
    if query.image:
        return ("image2image",)
    return ("text2image", "text2text", "text2product")


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class _Collection:
    fusion: Fusion
    store: ProductStore
    service: SearchService
    hybrid: SearchService | None = None
    """The same collection searched hybrid, where the store has full-text fields."""
    crops: SearchService | None = None
    """The same collection with photo queries searched as crops too."""
    words: SearchService | None = None
    """The same collection with photo queries re-ranked by their neighbours' words."""
    crops_words: SearchService | None = None
    """Both: photo queries searched as crops too, then re-ranked by the neighbours' words."""
    translated: SearchService | None = None
    """Queries' Chinese words searched with their English senses too (dense)."""
    translated_hybrid: SearchService | None = None
    """The same, hybrid."""
    examples: tuple[str, SearchService] | None = None
    """Words to photos searched by example too: the row's suffix and its service."""


class _Runner:
    def __init__(
        self,
        dataset: EvalDataset,
        encoder: Encoder,
        stores: StoreFactory,
        images: ImageSource,
        config: EvalConfig,
        progress: Progress,
    ) -> None:
        self.dataset = dataset
        self.encoder = encoder
        self.stores = stores
        self.images = images
        self.config = config
        self.progress = progress
        self.failed: dict[str, str] = {}
        self.with_image: set[str] = set()
        self.with_text: set[str] = set()
        self.indexed: set[str] = set()
        self.index_seconds: dict[str, float] = {}
        self.encode_seconds = 0.0
        self._photo_b64: dict[str, str] = {}

    # -- indexing ---------------------------------------------------------------------------

    def build(self, method: FusionMethod, weighting: PhotoWeighting, first: bool) -> _Collection:
        cfg = self.config
        info = self.encoder.info
        fusion = Fusion(
            method=method,
            image_weight=cfg.image_weight,
            joint_dim=info.joint_dim,
            weighting=weighting,
        )
        spec = CollectionSpec(
            alias=f"{cfg.alias_prefix}_{fusion.key}",
            encoder=info,
            fusion_key=fusion.key,
            fused_dim=fusion.fused_dim,
            metric=cfg.metric,
            index_type=cfg.index_type,
        )
        store = self.stores(spec)
        store.ensure()
        indexer = ProductIndexer(self.encoder, store, self.images, fusion)
        started = time.perf_counter()
        bar = self.progress(len(self.dataset.corpus), f"index {fusion.key}")
        try:
            for batch in _chunks(self.dataset.to_product_events(), cfg.index_batch):
                outcome = indexer.apply(batch)
                self.encode_seconds += outcome.encode_seconds
                if first:
                    bad = {event.id: str(error) for event, error in outcome.failures}
                    self.failed.update(bad)
                    self._note(batch, bad)
                bar.update(len(batch))
            settle = getattr(store, "settle", None)
            if callable(settle):
                settle()
        finally:
            bar.close()
        self.index_seconds[fusion.key] = time.perf_counter() - started

        # Bind the service to the store that was just filled; SearchService is what the query
        # worker runs, with its own limit on top_k raised to what the evaluation asks for.
        def service(
            retrieval: RetrievalConfig,
            crops: PhotoCrops | None = None,
            words: NeighbourWords | None = None,
            glossary: Glossary | None = None,
            examples: PhotoExamples | None = None,
        ) -> SearchService:
            return SearchService(
                self.encoder,
                store,
                fusion,
                self.images,
                max_top_k=MAX_TOP_K,
                retrieval=retrieval,
                photo_crops=crops,
                neighbour_words=words,
                glossary=glossary,
                photo_examples=examples,
            )

        hybrid = translated = translated_hybrid = None
        glossary = cedict_glossary() if True in cfg.glossary else None
        if glossary is not None and "dense" in cfg.retrievals:
            translated = service(RetrievalConfig.dense(), glossary=glossary)
        if "hybrid" in cfg.retrievals and store.lexical:
            modes = {s: cfg.hybrid_rankers.get(s, "rrf") for s in LEXICAL_FIELD}
            hybrid_retrieval = RetrievalConfig(modes, cfg.rrf_k, cfg.lexical_weight)
            hybrid = service(hybrid_retrieval)
            if glossary is not None:
                translated_hybrid = service(hybrid_retrieval, glossary=glossary)
        crops = service(RetrievalConfig.dense(), PhotoCrops()) if True in cfg.photo_crops else None
        words = both = None
        if True in cfg.photo_words:
            words = service(RetrievalConfig.dense(), words=NeighbourWords())
            if crops is not None:
                both = service(RetrievalConfig.dense(), PhotoCrops(), NeighbourWords())
        by_example = None
        if True in cfg.photo_examples:
            lexical = hybrid is not None
            suffix = "+bm25" * lexical + "+en" * (glossary is not None) + "+examples"
            retrieval = hybrid_retrieval if lexical else RetrievalConfig.dense()
            by_example = (suffix, service(retrieval, glossary=glossary, examples=PhotoExamples()))
        return _Collection(
            fusion,
            store,
            service(RetrievalConfig.dense()),
            hybrid,
            crops,
            words,
            both,
            translated,
            translated_hybrid,
            by_example,
        )

    def _note(self, batch: Sequence[ProductUpsert], bad: dict[str, str]) -> None:
        for event in batch:
            if event.id in bad:
                continue
            self.indexed.add(event.id)
            if event.images:
                self.with_image.add(event.id)
            if event.text:
                self.with_text.add(event.id)

    # -- searching --------------------------------------------------------------------------

    def _request(self, index: int, query: EvalQuery, scenario: EvalScenario) -> SearchRequest:
        image = None
        if query.image is not None:
            key = str(query.image)
            if key not in self._photo_b64:
                self._photo_b64[key] = base64.b64encode(query.image.read_bytes()).decode("ascii")
            image = self._photo_b64[key]
        top_k = min(self.config.depth + len(query.exclude), MAX_TOP_K)
        return SearchRequest(
            request_id=f"q{index}",
            text=query.text,
            image_base64=image,
            top_k=top_k,
            scenario=_SERVICE_SCENARIO[scenario],
        )

    def rank(
        self,
        queries: list[EvalQuery],
        scenario: EvalScenario,
        target: _Collection,
        service: SearchService | None = None,
    ) -> tuple[dict[str, list[str]], int]:
        """Rankings by query id, and the number of queries answered with an error."""
        run: dict[str, list[str]] = {}
        errors = 0
        batch = self.config.query_batch
        for chunk in _chunks(enumerate(queries), batch):
            if scenario == "text2text":
                # The words-only baseline: the field no scenario of the service searches.
                vectors = self.encoder.encode_texts([q.text or "" for _, q in chunk])
                flt = SearchFilter(require_text=True)
                for (_, q), vector in zip(chunk, vectors, strict=True):
                    limit = min(self.config.depth + len(q.exclude), MAX_TOP_K)
                    hits = target.store.search("text_vec", vector[None, :], limit, flt)[0]
                    run[q.id] = [h.id for h in hits]
                continue
            requests = [self._request(i, q, scenario) for i, q in chunk]
            # Left out in the search itself, so that nothing re-ranking the results (the
            # neighbours' words of a photo query) can lean on a query's own product.
            answers = (service or target.service).search_many(
                requests, exclude=[q.exclude for _, q in chunk]
            )
            for (_, q), reply in zip(chunk, answers, strict=True):
                if reply.error is not None:
                    errors += 1
                    run[q.id] = []
                else:
                    run[q.id] = [r.product_id for r in reply.results]
        depth = self.config.depth
        for q in queries:
            run[q.id] = [d for d in run[q.id] if d not in q.exclude][:depth]
        return run, errors

    def pool(self, scenario: EvalScenario) -> set[str]:
        if _FIELD[scenario] in ("image_vec", "visual_vec"):
            return self.with_image
        if _FIELD[scenario] == "text_vec":
            return self.with_text
        return self.indexed

    # -- scoring ----------------------------------------------------------------------------

    def score(
        self,
        set_name: str,
        scenario: EvalScenario,
        queries: list[EvalQuery],
        collections: list[_Collection],
        bar: Bar,
    ) -> Block | None:
        cfg = self.config
        qrels = self.dataset.qrels_for(queries)
        targets = collections if scenario in FUSED_SCENARIOS else collections[:1]
        if not any(grade > 0 for grades in qrels.values() for grade in grades.values()):
            bar.update(len(queries) * len(targets))
            return None
        excluded = {q.id: q.exclude for q in queries if q.exclude}
        pool = self.pool(scenario)
        # A random ranking can only draw from the products the field holds: judged products
        # outside it (a photo that failed, say) count for the chance level as for no ranking.
        reachable = {
            q: {d: g for d, g in grades.items() if d in pool} for q, grades in qrels.items()
        }
        block = Block(
            query_set=set_name,
            scenario=scenario,
            field=_FIELD[scenario],
            pool=len(pool),
            queries=len(queries),
            chance=chance_levels(reachable, len(pool), cfg.ks, depth=cfg.depth, exclude=excluded),
        )
        for target in targets:
            base = target.fusion.key if scenario in FUSED_SCENARIOS else _FIELD[scenario]
            variants: list[tuple[str, SearchService | None]] = []
            crops = scenario == "image2image" and target.crops is not None
            if ("dense" in cfg.retrievals or scenario not in LEXICAL_FIELD) and (
                False in cfg.photo_crops or not crops
            ):
                variants.append((base, None))
            if crops:
                variants.append((f"{base}+crops", target.crops))
            if scenario == "image2image" and target.words is not None:
                variants.append((f"{base}+words", target.words))
            if scenario == "image2image" and target.crops_words is not None:
                variants.append((f"{base}+crops+words", target.crops_words))
            if target.hybrid is not None and scenario in LEXICAL_FIELD:
                variants.append((f"{base}+bm25", target.hybrid))
            if target.translated is not None and scenario in LEXICAL_FIELD:
                variants.append((f"{base}+en", target.translated))
            if target.translated_hybrid is not None and scenario in LEXICAL_FIELD:
                variants.append((f"{base}+bm25+en", target.translated_hybrid))
            if target.examples is not None and scenario == "text2image":
                variants.append((base + target.examples[0], target.examples[1]))
            for name, service in variants:
                started = time.perf_counter()
                run, errors = self.rank(queries, scenario, target, service)
                block.seconds[name] = time.perf_counter() - started
                block.errors[name] = errors
                block.methods[name] = evaluate(run, qrels, cfg.ks, exclude=excluded)
            bar.update(len(queries))
        return block


def run_evaluation(
    dataset: EvalDataset,
    encoder: Encoder,
    stores: StoreFactory,
    images: ImageSource,
    config: EvalConfig | None = None,
    *,
    progress: Progress | None = None,
) -> EvalReport:
    """Indexes ``dataset``'s corpus and scores its queries; see the module docstring."""
    config = config or EvalConfig()
    runner = _Runner(dataset, encoder, stores, images, config, progress or _no_bar)

    # The blocks: (query set, scenario), query sets in file order, scenarios in SCENARIOS order.
    wanted: dict[tuple[str, EvalScenario], list[EvalQuery]] = {}
    for set_name, queries in dataset.query_sets().items():
        for scenario in (s for s in SCENARIOS if s in config.scenarios):
            chosen = [q for q in queries if scenario in _scenarios_of(q)]
            if chosen:
                wanted[set_name or "queries", scenario] = chosen
    # Without a fused scenario the fusion method changes nothing that is searched.
    fused = any(s in FUSED_SCENARIOS for _, s in wanted)
    methods = config.fusions if fused else config.fusions[:1]
    weightings = config.weightings if fused else config.weightings[:1]
    pairs = [(m, w) for m in methods for w in weightings]
    collections = [runner.build(m, w, first=i == 0) for i, (m, w) in enumerate(pairs)]

    total = sum(
        len(qs) * (len(collections) if s in FUSED_SCENARIOS else 1) for (_, s), qs in wanted.items()
    )
    bar = runner.progress(total, "search")
    try:
        blocks = [
            block
            for (set_name, scenario), queries in wanted.items()
            if (block := runner.score(set_name, scenario, queries, collections, bar)) is not None
        ]
    finally:
        bar.close()

    return EvalReport(
        dataset=str(dataset.root),
        encoder=encoder.info,
        config=config,
        corpus=len(dataset.corpus),
        indexed=len(runner.indexed),
        with_image=len(runner.with_image),
        with_text=len(runner.with_text),
        failed=runner.failed,
        blocks=blocks,
        index_seconds=runner.index_seconds,
        encode_seconds=runner.encode_seconds,
    )
