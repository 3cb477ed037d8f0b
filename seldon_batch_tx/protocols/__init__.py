"""Inference protocols (Seldon v1, Open Inference V2): request bodies, answers, protobuf forms."""
