"""A plugin module outside every install allowlist; importing it leaves a marker file.

The path comes from ``AGENT_PM_TEST_IMPORT_MARKER``; the install-safety tests assert that the
file never appears, so the module was never imported.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent_pm.plugins import PluginBase

Path(os.environ["AGENT_PM_TEST_IMPORT_MARKER"]).write_text("imported")


class Marker(PluginBase):
    name = "marker"
