"""The shapes passed across boundaries: the HTTP API's models and the runner state machine's input."""
