"""What every layer shares: the error types, the list of callbacks behind every event, and
the wait for a signal to stop."""
