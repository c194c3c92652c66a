"""The contract between every writer and reader of results: figures, settings, the run record.

``figures``: every figure with its unit and roles; ``settings``: every setting with its owner
and what it affects; ``record``: ``RunRecord``, the typed ``run.json``; ``phases``: phase names.
This package imports nothing of the harness above it (a test checks), so anything may read it.
"""
