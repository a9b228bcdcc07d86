"""Thin entry points: each builds its worker from one Settings object and runs it.

python -m workers.indexer
python -m workers.query
python -m workers.behaviour
"""

__all__: list[str] = []
