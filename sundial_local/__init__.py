"""Sundial's local stack: emulated AWS (moto), the API behind an emulated JWT authorizer, the dispatcher
and a demo agent."""
