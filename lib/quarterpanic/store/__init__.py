"""Caches on disk that make a repeated run fast without changing its results.

It owns pickle entries with their size limits and eviction (``entries``), the results cache that keeps a
detector's output while its inputs and code are unchanged (``results``) and the dataset snapshots of an unchanged
data folder (``snapshots``). ``dataset`` and ``analysis`` use it. It may import only ``paths``, ``params``,
``errors`` and ``util``: it stores whatever it is given and knows nothing of exports or detectors (the reload
cache of single exports lives beside the loader, in ``ingest.reload_cache``).
"""
