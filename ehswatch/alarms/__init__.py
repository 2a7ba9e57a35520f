"""Alarms and on-call (docs/alarms.md): ISA-18.2 states, a lossless outbox, notifications."""
