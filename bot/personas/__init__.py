"""A server's own personas (issue 24): upload text, train from the general base, talk to it.

``uploads`` checks the files, ``settings`` holds the bounds, ``service`` creates, lists,
describes and deletes personas and finds the checkpoint a persona speaks from; the /persona cog
and ``charbot persona`` both call the service.
"""
