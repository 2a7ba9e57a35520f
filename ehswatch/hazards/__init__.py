"""Hazard tickets (SPEC §8): every alarm's loop closed, with deadlines and approvals."""
