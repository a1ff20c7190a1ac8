"""The Discord front end: the only package that imports ``discord`` (tests/test_layout.py checks it).

``client`` builds the bot and loads the cogs listed in one ``EXTENSIONS`` list; ``cogs/`` are thin
(an interaction in, a call to :mod:`bot.core`, an answer out through ``interactions``);
``options`` checks every option against its declared type; ``metrics`` serves Prometheus and
health checks; ``endpoints`` points discord.py at Discord or at a fake one; ``serve`` runs it.
"""
