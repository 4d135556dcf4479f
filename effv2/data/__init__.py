"""Data sets and pipelines: ImageFolder on disk, the embedded digits demo, transforms."""
