"""Agent PM's plugin platform: the core (``plugins``), its operator surfaces (``api``) and CLI."""
