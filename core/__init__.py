"""stepup's engine: policy, lifecycle, credentials, signed decisions and the audit log.

Nothing in this package imports Slack, an HTTP framework or anything from ``bot``.
"""
