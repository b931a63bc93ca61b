"""Network definitions for the learned stages (imported lazily: they import torch)."""
