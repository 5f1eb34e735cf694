"""What operators use: the HTTP API and the command line's views of it."""
