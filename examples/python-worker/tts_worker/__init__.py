"""An example Baton worker for text-to-speech engines (see README.md)."""
