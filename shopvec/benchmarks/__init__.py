"""Benchmarks: commands that print figures (and JSON), never timed tests."""

__all__: list[str] = []
