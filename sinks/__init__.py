"""qanat sinks: each module upserts normalized records into a datastore."""
