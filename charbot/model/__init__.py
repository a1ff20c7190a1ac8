"""The char-LSTM toolkit: character set, network, training, checkpoints, evaluation, sampling.

Dataflow goes one way: this package never imports ``charbot.bot``.
"""
