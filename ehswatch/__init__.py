"""ehswatch: telemetry, three-tier alarms, PLC interlocks and hazard tickets for dust and gas."""

__version__ = "0.1.0"
