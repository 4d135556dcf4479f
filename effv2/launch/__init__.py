"""Device context and process launch."""
