"""The use cases of the engine, one module per concern; ``core.service.Stepup`` joins them."""
