"""qanat sources: each module publishes raw events to the raw topic."""
