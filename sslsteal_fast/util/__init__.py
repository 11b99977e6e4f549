"""Neutral helpers every layer may use: argument checks, atomic files and caches, SQLite transactions.

Nothing here imports torch at module level (``files`` does, lazily, for its tensor helpers), so the
command line and the configuration objects stay importable without loading the ML stack.
"""
