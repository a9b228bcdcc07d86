"""Thin entry points: each builds its worker from one Settings object and runs it.

python -m workers.indexer
python -m workers.query
python -m workers.behaviour
python -m workers.http      (the HTTP API and page, `shopvec serve`)
"""

__all__: list[str] = []
