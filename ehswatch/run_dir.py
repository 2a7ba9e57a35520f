"""The control part's run directory: what lives there, by name (see docs/deploy.md)."""

from __future__ import annotations

STATE_FILE = "state"  # the shared state (`shared_state`), rewritten once per tick
COMMAND_SOCKET = "control.sock"  # the command channel (`control_channel`)
CONFIG_FILE = "config.json"  # the validated config, for the desk part
