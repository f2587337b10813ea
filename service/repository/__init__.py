"""The model repository: what a version is on disk (the artifact), the registry of
loaded versions, the version policy, and the watcher that hot-reloads new versions."""
