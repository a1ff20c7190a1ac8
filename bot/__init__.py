"""The Discord bot persona: configuration, storage, reply logic, thin discord.py cogs, fine-tuning,
the ``charbot`` command line (``cli/``) and the benchmark (``bench/``).

Everything except ``client.py``, ``interactions.py`` and ``cogs/`` is plain Python that knows nothing of Discord,
so the local CLI (``charbot reply``, ``charbot chat``) and the tests run the exact logic the
bot runs.
"""
