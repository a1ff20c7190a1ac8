"""The Discord bot persona: configuration, storage, reply logic, and thin discord.py cogs.

Everything except ``client.py`` and ``cogs/`` is plain Python that knows nothing of Discord,
so the local CLI (``charbot reply``, ``charbot chat``) and the tests run the exact logic the
bot runs.
"""
