"""The experiment spec language: pydantic models, YAML loading with positions, sweep expansion."""
