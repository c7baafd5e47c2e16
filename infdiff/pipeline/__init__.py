"""The two-stage ∞-Diff product: building models from configs, training both stages, generation."""
