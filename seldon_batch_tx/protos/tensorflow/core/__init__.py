"""Generated TensorFlow TensorProto subset (see scripts/gen-protos.sh)."""
