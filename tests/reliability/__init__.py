"""Reliability and security, proven end to end: fault injection, bad input, secrets and load (issue 7)."""
