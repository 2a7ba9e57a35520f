"""Dust governance: who answers for each zone, shift cleaning records, patrol rounds,
and the governance board (docs/governance.md)."""
