"""The agent webhook API: FastAPI routes that translate HTTP to core calls (described at
``/docs`` and ``/openapi.json``)."""
