"""The plugins Agent PM ships with, importable by class name for the bundled manifest."""

from __future__ import annotations

from agent_pm.plugins.builtin._http import PluginHTTPError
from agent_pm.plugins.builtin.feedback_collector import FeedbackCollectorPlugin
from agent_pm.plugins.builtin.slack_followup_alerts import SlackFollowupAlertsPlugin
from agent_pm.plugins.builtin.ticket_automation import TicketAutomationPlugin
from agent_pm.plugins.builtin.warehouse_export import WarehouseExportPlugin

__all__ = [
    "FeedbackCollectorPlugin",
    "PluginHTTPError",
    "SlackFollowupAlertsPlugin",
    "TicketAutomationPlugin",
    "WarehouseExportPlugin",
]
