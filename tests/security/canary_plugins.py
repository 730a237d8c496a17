"""Plugins that do their worst with their secrets: log them at DEBUG and raise them."""

from __future__ import annotations

from typing import Any

from agent_pm.plugins import PluginBase

SECRETS = (
    "CANARY_INLINE",
    "CANARY_INLINE_ENV",
    "CANARY_ENV",
    "SLACK_BOT_TOKEN",
    "CANARY_FILE_SCOPED",
    "CANARY_FILE_TOP",
    "CANARY_FILE_GLOBAL",
)


class Canary(PluginBase):
    """Every hook call logs the secrets every way a logger allows, then raises them."""

    name = "canary"
    hooks = ("post_plan",)
    required_secrets = SECRETS

    def values(self) -> list[str]:
        return [self.get_secret(key) or "" for key in SECRETS]

    async def post_plan(self, **payload: Any) -> None:
        values = self.values()
        self.log.debug("calling upstream with %s", values)
        self.log.debug("token=%(token)s", {"token": values[0]})
        self.log.info("inline " + " ".join(values))
        self.log.warning("stacked", stack_info=True)
        try:
            raise RuntimeError(f"upstream refused {values}")
        except RuntimeError as exc:
            self.log.exception("failed with %s", values[1])
            self.log.error("again", exc_info=exc)
            raise


class CanaryStart(Canary):
    """Fails to start, telling every secret it holds."""

    name = "canary_start"

    async def on_enable(self) -> None:
        values = self.values()
        self.log.debug("enabling with %s", values)
        raise RuntimeError(f"cannot log in with {values}")
