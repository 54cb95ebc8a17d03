"""ha/engine package."""
