"""Training learned stages: data (split by file, decoded once, degraded on the fly) and the trainer.

Model families are contracts of the core (`restorekit.training.spec.ModelSpec`),
registered by plugins through `register_models`.
"""
