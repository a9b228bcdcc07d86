"""Applies a batch of user events to the stores: taste vectors, shared counts, forgetting.

Order of writes, so that a kill at any point and the replay that follows change nothing twice:
the shared-count rows first (each skips changes from offsets it already holds), then the user
rows (each holds the event ids it includes). A replayed event is found in its user's row and
adds nothing; a replayed event whose user row was not yet written is applied to the user again,
and its count changes are refused by the rows that already hold them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.user_event import ForgetUser, UserEvent
from shopvec.behaviour.profile import UserProfile
from shopvec.behaviour.pseudonym import Pseudonymiser
from shopvec.behaviour.stats import MAX_OPS, RowKind, StatsUpdate, Tag, settle
from shopvec.behaviour.stores import StatsStore, UserStore
from shopvec.behaviour.window import Contribution
from shopvec.settings import BehaviourSettings
from shopvec.store.base import ProductStore

__all__ = ["EXPIRE_CHUNK", "ITEM_CATEGORIES", "BatchOutcome", "BehaviourEngine", "Inbound"]

log = logging.getLogger(__name__)

ITEM_CATEGORIES = 4
"""The levels of a product's category path a user's window keeps and counts popularity under
(catalogue paths are three or four deep). So bounded, with event ids of at most 128 bytes and
names of at most 128 (brands 256), each JSON field of a user's row stays within the 64 KiB
Milvus holds: a row Milvus refused would fail its events after their counts were written."""
_HOUR_MS = 3_600_000
EXPIRE_CHUNK = MAX_OPS // 4
"""Users expired together: a row holds the op ids of a chunk whose users were not yet deleted
(a crash, a timeout) until a retry deletes them; four such chunks fit."""
_DAY_MS = 24 * _HOUR_MS


@dataclass(frozen=True)
class Inbound:
    """One message: its event, the partition it came from (the shard) and its offset."""

    event: UserEvent | ForgetUser
    shard: int
    offset: int


@dataclass
class BatchOutcome:
    applied: int = 0
    duplicates: int = 0
    unknown_products: int = 0
    forgotten: int = 0
    expired: int = 0
    users_written: int = 0
    rows_written: int = 0


def _ms(event: UserEvent | ForgetUser) -> int:
    return int(event.timestamp.timestamp() * 1000)


def _tag(profile: UserProfile, m: Inbound) -> Tag:
    """What the count rows of the user's shard check a message's changes by: its offset where
    it came from that shard's partition; else its partition and offset, checked against that
    partition's own (one partition's offsets say nothing of another's: a user keyed " alice"
    and "alice", one user to the contract, or a topic given more partitions)."""
    return m.offset if m.shard == profile.shard else (m.shard, m.offset)


class BehaviourEngine:
    def __init__(
        self,
        users: UserStore,
        stats: StatsStore,
        products: ProductStore,
        pseudonyms: Pseudonymiser,
        config: BehaviourSettings,
    ) -> None:
        self._users = users
        self._stats = stats
        self._products = products
        self._pseudonyms = pseudonyms
        self._config = config
        self.half_life_ms = config.half_life_hours * _HOUR_MS
        self._limits: dict[RowKind, int] = {
            "i": config.cf_neighbours,
            "c": config.popular_per_category,
        }

    # -- events -----------------------------------------------------------------------------

    def apply(self, batch: Sequence[Inbound]) -> BatchOutcome:
        out = BatchOutcome()
        if not batch:
            return out
        candidates = {m.event.user_id: self._pseudonyms.candidates(m.event.user_id) for m in batch}
        stored = self._users.get([p for ps in candidates.values() for p in ps])
        product_ids = list(
            dict.fromkeys(m.event.product_id for m in batch if isinstance(m.event, UserEvent))
        )
        products = self._products.get(product_ids) if product_ids else {}

        profiles: dict[str, UserProfile | None] = {}
        changed: set[str] = set()
        drop: set[str] = set()
        update = StatsUpdate(self.half_life_ms)
        for m in batch:
            uid = m.event.user_id
            if uid not in profiles:
                profiles[uid] = self._load(candidates[uid], stored, drop, update)
            profile = profiles[uid]
            if isinstance(m.event, ForgetUser):
                if profile is not None:
                    released = Contribution()
                    profile.window.release(released)
                    update.add(profile.shard, _tag(profile, m), released)
                    drop.add(profile.pseudonym)
                    out.forgotten += 1
                profiles[uid] = None
                changed.discard(uid)
                continue
            event = m.event
            at_ms = _ms(event)
            if profile is not None and profile.recent.seen(event.event_id, at_ms):
                out.duplicates += 1
                continue
            product = products.get(event.product_id)
            if product is None:
                # Not (yet) indexed: nothing to learn from it. Remembered as seen by a user
                # who has a row, so that its replay is not counted later either.
                out.unknown_products += 1
                if profile is not None:
                    profile.recent.add(event.event_id, at_ms)
                    changed.add(uid)
                continue
            vector = np.asarray(product["fused_vec"], dtype=np.float32)
            if profile is None:
                c = self._config
                profile = UserProfile.new(
                    candidates[uid][0], m.shard, len(vector), c.recent_event_ids, c.cf_window
                )
                profiles[uid] = profile
            self._interaction(profile, event, at_ms, vector, product, m, update)
            changed.add(uid)
            out.applied += 1

        rows = self._stats.get(sorted(update.keys()))
        written = update.apply(rows, self._limits)
        self._stats.upsert(written)
        upserts = [p.to_row() for uid in changed if (p := profiles[uid]) is not None]
        self._users.upsert(upserts)
        self._users.delete(sorted(drop - {r["pseudonym"] for r in upserts}))
        if finished := update.tags():  # expiries finished here (_load): their op ids go
            # `rows` is what the counts hold now: read above, then changed and written whole.
            self._stats.upsert(settle(rows.values(), finished))
        out.users_written = len(upserts)
        out.rows_written = len(written)
        return out

    def _load(
        self,
        candidates: list[str],
        stored: dict[str, dict[str, Any]],
        drop: set[str],
        update: StatsUpdate,
    ) -> UserProfile | None:
        """The user's row under the current key, or moved there from a previous key; None for
        a row whose expiry was begun and not finished (a crash, a timeout before the retry):
        that expiry is finished here, with its own op id, which count rows that already took
        the share back refuse."""
        found = [p for p in candidates if p in stored]
        if not found:
            return None
        c = self._config
        profile = UserProfile.from_row(stored[found[0]], c.recent_event_ids, c.cf_window)
        if profile.expiring is not None:
            released = Contribution()
            profile.window.release(released)
            update.add(profile.shard, profile.expiring, released)
            drop.update(found)
            return None
        # A row under an old key is moved (upserted under the current one, then deleted); a
        # copy left behind by a crash between the two is the same share, so it just goes.
        drop.update(p for p in found if p != candidates[0])
        profile.pseudonym = candidates[0]
        return profile

    def _interaction(
        self,
        profile: UserProfile,
        event: UserEvent,
        at_ms: int,
        vector: np.ndarray,
        product: dict[str, Any],
        m: Inbound,
        update: StatsUpdate,
    ) -> None:
        weight = self._config.event_weights.get(event.type, 0.0)
        categories = [str(c) for c in product.get("category") or []][:ITEM_CATEGORIES]
        profile.recent.add(event.event_id, at_ms)
        profile.last_event_ms = max(profile.last_event_ms, at_ms)
        if weight == 0:
            return
        profile.taste.add(
            vector,
            weight,
            at_ms,
            self.half_life_ms,
            categories=categories,
            brand=product.get("brand") or None,
        )
        if weight > 0:
            contribution = Contribution()
            profile.window.touch(event.product_id, at_ms, categories, contribution)
            update.add(profile.shard, _tag(profile, m), contribution)

    # -- inactivity -------------------------------------------------------------------------

    def expire(self, now_ms: int, shards: Collection[int] | None, limit: int = 500) -> int:
        """Drops users with no event for inactive_ttl_days, and their share of the counts,
        EXPIRE_CHUNK users at a time."""
        cutoff = now_ms - int(self._config.inactive_ttl_days * _DAY_MS)
        rows = self._users.inactive(cutoff, shards, limit)
        for start in range(0, len(rows), EXPIRE_CHUNK):
            self._expire(rows[start : start + EXPIRE_CHUNK])
        if rows:
            log.info("expired %d inactive users", len(rows))
        return len(rows)

    def _expire(self, rows: Sequence[dict[str, Any]]) -> None:
        """Four writes: the users marked with an op id derived from each one's row (the same
        on a retry); the counts, each change tagged with it; the users' deletion; then the op
        ids dropped from the counts again. A retry of users whose counts were written and who
        were not deleted (a crash, a timeout) finds their op ids and changes nothing twice,
        however it is cut: the rows keep op ids only until their users are gone, so later
        expiries cannot push them out; an event of such a user before the retry finishes the
        expiry first (_load)."""
        c = self._config
        update = StatsUpdate(self.half_life_ms)
        profiles = [UserProfile.from_row(row, c.recent_event_ids, c.cf_window) for row in rows]
        marked = []
        for profile in profiles:
            digest = hashlib.sha256(f"{profile.pseudonym}:{profile.last_event_ms}".encode())
            profile.expiring = op = "x" + digest.hexdigest()[:16]
            marked.append((profile, op))
        # Marked first: an event or a forget of theirs that comes before a retry finishes
        # the expiry (_load) rather than take back again what it took.
        self._users.upsert([p.to_row() for p in profiles])
        for profile, op in marked:
            released = Contribution()
            profile.window.release(released)
            update.add(profile.shard, op, released)
        keys = sorted(update.keys())
        stats = self._stats.get(keys)
        self._stats.upsert(update.apply(stats, self._limits))
        self._users.delete([r["pseudonym"] for r in rows])
        # `stats` is what the counts hold now (this worker alone writes its shards' rows).
        self._stats.upsert(settle(stats.values(), update.tags()))
