"""Sub-commands of the ``charbot`` command line, one module per job."""
