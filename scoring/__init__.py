"""Commands that score customers outside the service (`python -m scoring.batch`)."""
