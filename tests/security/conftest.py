"""The API fixtures (registry on the test manifest, the app, an in-process client), shared."""

from __future__ import annotations

from tests.api.conftest import api_settings, app, client, manifest_path, registry

__all__ = ["api_settings", "app", "client", "manifest_path", "registry"]
