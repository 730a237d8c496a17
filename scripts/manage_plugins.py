"""Administer Agent PM's plugins: the ``agent-pm plugins`` commands under their historical name.

uv run python scripts/manage_plugins.py list
"""

from __future__ import annotations

import sys

from agent_pm.cli import plugins_main

if __name__ == "__main__":
    sys.exit(plugins_main())
