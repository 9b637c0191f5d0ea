"""Flood-filling networks in PyTorch: model, checkpoints (incl. google/ffn import), inference,
training.
"""
