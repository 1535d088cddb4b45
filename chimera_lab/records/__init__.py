"""Recording: writers in node processes, collecting sessions, reading them back."""
