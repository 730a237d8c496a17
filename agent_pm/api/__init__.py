"""The operator surfaces of the plugin platform: REST API, telemetry stream and dashboard."""
