"""Bringing readings in: Modbus and MQTT collectors feeding `ReadingBatch`es to a queue."""
