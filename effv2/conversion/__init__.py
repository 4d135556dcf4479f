"""Weight conversion: official TensorFlow checkpoints and timm state dicts into effv2 checkpoints."""
