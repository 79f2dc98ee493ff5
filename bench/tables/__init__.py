"""The benchmarks' tables: the Markdown a bench script writes and the README renders.

``markdown`` (the table format, re-exported by bench/common.py) and ``columns`` (headers
and rows of the tables a bench script and the README both show) serve the bench scripts
and bench/readme_tables.py alike, so each is defined once. ``source`` reads a result
file; ``throughput``, ``recognition``, ``memory`` and ``jobs`` hold the README's
renderers, one module per family of benchmarks.
"""
