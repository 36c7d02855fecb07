"""Use cases: what the API, the dispatcher and the runner do, over the stores and adapters."""
