"""The technician's calibration wizard (cage file -> plate -> shots -> balls -> figures)."""
