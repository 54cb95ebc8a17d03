"""ha/protocol package."""
