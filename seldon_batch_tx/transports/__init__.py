"""Moving one request body to the model and its answer back: REST (fast, treq) and gRPC."""
