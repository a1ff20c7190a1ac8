"""The Discord bot persona and everything around it, one room a job.

- ``core/``: the Discord-free reply core (the reply service, rendering, scoring, the plain-text
  answers of the other commands). The cogs and the CLI call the same functions, so
  ``charbot reply`` and ``charbot chat`` print exactly what the bot would post.
- ``discord_app/``: the only package that imports ``discord`` (the client, the cogs, option
  checks, sending, metrics, the serve loop); ``tests/test_layout.py`` holds that boundary.
- ``store/``: the database, one module per backend (SQLite, PostgreSQL).
- ``jobs/``: admin fine-tuning jobs (queue, child process, guard, versions).
- ``cli/``: one module per ``charbot`` sub-command; ``bench/``: ``charbot bench``.
- ``config.py``: settings from ``.env`` and the environment.
"""
