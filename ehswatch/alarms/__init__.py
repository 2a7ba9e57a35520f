"""Alarms and on-call (SPEC §7): ISA-18.2 states, a lossless outbox, notifications."""
