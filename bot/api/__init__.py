"""The agent webhook API (DESIGN §4): FastAPI routes that translate HTTP to core calls."""
