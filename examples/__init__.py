"""Complete examples that the test suite runs (see docs/custom-sources.md)."""
