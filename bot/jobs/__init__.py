"""Admin fine-tuning: a corpus's served checkpoint learns from the text users contributed.

The training itself is :mod:`model.finetune` (plain Python, no Discord) and the check a new
checkpoint passes is :mod:`model.verify`. Here: ``job`` runs the training in its own niced
process and streams progress back, ``versions`` keeps the numbered checkpoints on disk,
``settings`` reads the limits from ``.env``, ``messages`` says what /finetune status and /model
show, and ``manager`` ties them to the database (:mod:`bot.store.jobs`) so the bot and
``charbot finetune`` share one code path.
"""
