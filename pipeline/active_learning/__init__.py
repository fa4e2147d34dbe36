"""The active-learning room: rounds, pseudo-labels, uncertainty, selection, auto-accept, and
what a strategy saves."""
