"""Thin entry points: each builds its worker from one Settings object and runs it.

python -m workers.indexer
python -m workers.query
python -m workers.behaviour
python -m workers.http      (the HTTP API and page, `shopvec serve`)

Each sets malloc up (`load_settings`, shopvec.allocator) before it imports what it builds:
numpy and pyarrow start threads as they are imported, and malloc must be set up before any
thread allocates. Importing a worker's module starts no thread (tests/unit/test_allocator.py).
"""

__all__: list[str] = []
