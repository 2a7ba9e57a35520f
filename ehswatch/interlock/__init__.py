"""Interlock outputs to PLCs (docs/interlock.md): voting, latch, reset, bypass, heartbeat, readback.

ehswatch *requests* trips. It is not a safety instrumented system and claims no SIL: the
PLC must be able to trip on its own, and its watchdog must stop the line when the
heartbeat written here stops.
"""
