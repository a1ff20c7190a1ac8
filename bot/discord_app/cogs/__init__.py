"""Thin discord.py cogs, one extension each: each turns an interaction into a call to the plain
modules and sends the answer with :mod:`bot.discord_app.interactions`.

Every module here has ``async def setup(bot)``; :mod:`bot.discord_app.client` loads them by name
(``EXTENSIONS``), so this package imports nothing and the client imports none of it.
"""
