"""The local Slack sandbox (docs/sandbox.md): with no Slack token, a stand-in workspace in-process
and a page at ``/sandbox`` that shows it and acts in it, as Slack would.

Imported only by ``bot/server.py`` when sandbox mode is on; it is the one production path that
loads the Slack emulator.
"""
