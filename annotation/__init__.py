"""Adapters to the annotation and review tools: Label Studio and FiftyOne."""
