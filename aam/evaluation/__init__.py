"""Torch-free evaluation: metrics of predictions, figures, and ordinations of embeddings.

Used by the trainer (validation), by the QIIME 2 visualizers (which must not import torch) and by the benchmarks.
"""
