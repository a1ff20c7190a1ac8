"""The training texts and what ships from them: the registry, cleaning, priming, fetching, the
held-out split, the shipped checkpoints and the model card. Imports only :mod:`model`."""
