"""Admin fine-tuning: a corpus's served checkpoint learns from the text users contributed.

``job`` is the pipeline itself (plain Python, no Discord), ``runner`` runs it in its own
niced process and streams progress back, ``versions`` keeps the numbered checkpoints on
disk, ``verify`` checks a new one before it is served, and ``manager`` ties them to the
database so the bot and ``charbot finetune`` share one code path.
"""
