"""Data access: the only code that talks to DynamoDB (pynamodb lives here alone)."""
