"""Trainable model families: the `ModelSpec` contract and the lookup of registered families."""
