"""A stand-in application for the examples: its own retry and breaker helpers, with no OpenTelemetry code at all."""
