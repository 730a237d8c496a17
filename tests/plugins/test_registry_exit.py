"""An error raised inside ``async with PluginRegistry`` comes out as itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent_pm.errors import PluginNotFoundError
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings


@pytest.mark.anyio
async def test_registry_body_error_is_not_wrapped_in_a_group(
    write_manifest: Callable[[str], Path], settings: Settings
) -> None:
    path = write_manifest("[]\n")
    with pytest.raises(PluginNotFoundError):
        async with PluginRegistry(path, settings) as registry:
            await registry.set_enabled("nobody", True)
