"""Hazard tickets (docs/hazards.md): every alarm's loop closed, with deadlines and approvals."""
