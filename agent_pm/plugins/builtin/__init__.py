"""The plugins Agent PM ships with."""
