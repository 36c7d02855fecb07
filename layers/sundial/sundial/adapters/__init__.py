"""Clients of the world outside AWS's tables: the agent's HTTP endpoint and retrying AWS calls."""
