"""stepup's edges: HTTP API, Slack app, scheduler and CLI. They translate, core decides."""
