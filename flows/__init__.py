"""Prefect flows and the `spinetrack` CLI. Thin: logic lives in pipeline/, synthetic/, annotation/."""

import os

# Prefect reads its settings when first imported, so these must be set before any `import prefect`.
# Its ephemeral server gets 20 s by default to start, which a fresh PREFECT_HOME (database
# migrations) exceeds on 2 busy cores (measured ~22 s). Telemetry cannot reach anything offline and
# its start-up write races the migrations ("database is locked" in Prefect's own SQLite).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
