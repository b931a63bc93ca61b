"""Training learned stages: model specs (registered by plugins), data, and the trainer."""
