"""Discord's limits: the one place the bot knows them.

Plain numbers with no ``discord`` import, so the reply core sizes and renders a message with
the same figures the Discord front end enforces and the settings are checked against.
"""

MESSAGE_CHARS = 2000  # a message's text
TEXT_INPUT_CHARS = 4000  # one text input of a modal (/contribute)
LONGEST_REPLY_CHARS = 1900  # the most a reply may generate: the rest of a message is the prompt and markup
