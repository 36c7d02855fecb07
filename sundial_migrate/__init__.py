"""`make migrate`: import EventBridge Scheduler schedules or exported trigger rows into Sundial (SPEC §7)."""
