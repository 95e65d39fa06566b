"""The Slack edge: Bolt app, approval cards, the outbox worker, Slack directory lookups."""
