"""Loopback stand-ins for the services the built-in plugins call (Jira, Slack): tests, demos."""
