"""The reply core: plain Python that knows nothing of Discord.

A request becomes a posted message here (``replies``: the service; ``render``: how it looks;
``score``, ``words``, ``verbatim``: which candidate is posted; ``engines``: the loaded models;
``throttle``: cooldowns), and the other commands become plain-text ``answers``. The Discord
front end (:mod:`bot.discord_app`) and the CLI (:mod:`bot.cli`) both call it.
"""
