"""Sundial's rules with no I/O: schedules, missed runs, retries, names, instants, messages, auth, errors."""
