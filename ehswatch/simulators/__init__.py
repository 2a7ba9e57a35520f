"""Sensor and PLC simulators that speak the real protocols, driven by scenario files."""
