"""Sundial's shared package: domain rules, contracts, storage, the use cases and the agent client."""
