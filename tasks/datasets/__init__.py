"""Datasets of the benchmark suite.

One module per source (``synthetic`` is the embedded, generated-on-the-fly dataset that lets
every task run offline); import the module you need, e.g.
``from tasks.datasets.synthetic import SyntheticScenes``.
"""
