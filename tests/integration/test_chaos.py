"""`shopvec bench chaos` in small: each worker and Milvus Lite killed once with SIGKILL under
load, on a private embedded stack; the end state matches the events. The full run (1,000
products, 10,000 clicks, five kills per worker) is the benchmark command."""

from __future__ import annotations

import pytest

from shopvec.benchmarks.chaos import run_chaos_bench
from shopvec.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(900)  # four processes loading the encoder again, on two cores
def test_nothing_lost_doubled_or_changed_after_kills() -> None:
    result = run_chaos_bench(
        Settings(), products=40, clicks=400, users=12, kills=1, seconds=20, seed=11
    )
    assert result["kills"] == {"indexer": 1, "query": 1, "behaviour": 1}
    assert result["milvus_restarts"] == 1
    assert (result["lost"], result["doubled"], result["mismatched"]) == (0, 0, 0), result
    assert result["reencoded_beyond_uncommitted"] == 0
    # Searches sent while the query worker or Milvus is down may go unanswered (the worker
    # drops requests older than max_request_age_s); between restarts they are answered.
    assert result["search_ok"] > 0
    assert result["errors"] == []
