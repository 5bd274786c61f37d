"""What every layer shares: the error types and the list of callbacks behind every event."""
