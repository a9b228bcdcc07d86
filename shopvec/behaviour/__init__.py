"""User behaviour: taste vectors, co-occurrence and popularity, personalised ranking, privacy.

Events in (the behaviour worker, `BehaviourService` around `BehaviourEngine`), rankings out
(`Personaliser`, used by the search service). Users are known only by pseudonym
(`Pseudonymiser`); Milvus holds everything, in the users collection and its counts collection.
"""

from shopvec.behaviour.engine import BatchOutcome, BehaviourEngine, Inbound
from shopvec.behaviour.memory import InMemoryStatsStore, InMemoryUserStore
from shopvec.behaviour.metrics import BehaviourMetrics
from shopvec.behaviour.milvus import MilvusStatsStore, MilvusUserStore, counts_collection
from shopvec.behaviour.personalise import BlendWeights, Personaliser, Ranked
from shopvec.behaviour.profile import UserProfile
from shopvec.behaviour.pseudonym import Pseudonymiser
from shopvec.behaviour.service import BehaviourService
from shopvec.behaviour.stats import StatsRow, StatsUpdate
from shopvec.behaviour.stores import StatsStore, UserStore
from shopvec.behaviour.taste import TasteState, decay
from shopvec.behaviour.window import ALL_CATEGORIES, Contribution, ItemWindow

__all__ = [
    "ALL_CATEGORIES",
    "BatchOutcome",
    "BehaviourEngine",
    "BehaviourMetrics",
    "BehaviourService",
    "BlendWeights",
    "Contribution",
    "InMemoryStatsStore",
    "InMemoryUserStore",
    "Inbound",
    "ItemWindow",
    "MilvusStatsStore",
    "MilvusUserStore",
    "Personaliser",
    "Pseudonymiser",
    "Ranked",
    "StatsRow",
    "StatsStore",
    "StatsUpdate",
    "TasteState",
    "UserProfile",
    "UserStore",
    "counts_collection",
    "decay",
]
