"""Label Studio adapter: server lifecycle, labeling config, push of tasks, incremental pull of corrections.

See docs/labelstudio.md. Entry points: `server.start_server/stop_server`, `push.push/push_from_review`,
`pull.pull`, `hooks.LabelStudioHooks` (what the active-learning loop uses).
"""
