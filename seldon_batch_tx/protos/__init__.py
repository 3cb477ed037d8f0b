"""Generated protobuf/gRPC modules for the Seldon v1 protocol (see scripts/gen-protos.sh)."""
