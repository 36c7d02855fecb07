"""Sundial's shared package: models, schedule maths, storage and the agent client."""
