"""The release room: versioned immutable releases, their training kit and dataset card."""
