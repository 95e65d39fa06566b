"""``python -m bot.cli``: the ``stepup`` command without the installed script."""

from bot.cli.root import main

main()
