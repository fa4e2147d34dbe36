"""Marker maps shipped with SpineTrack (JSON data; format in docs/opensim-marker-map.md)."""
