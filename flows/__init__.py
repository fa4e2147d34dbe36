"""Prefect flows and the `spinetrack` CLI. Thin: logic lives in pipeline/, synthetic/, annotation/."""
