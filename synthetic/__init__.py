"""Unreal render ingest: contract reading, OpenSim alignment, projection, visibility."""
