"""ha/dataplane package."""
