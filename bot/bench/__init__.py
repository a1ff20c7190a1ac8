"""``charbot bench``: generation, concurrency, training, fidelity and reply-quality figures in one run.

Absolute speeds depend on the machine and on what else it is doing, so every figure that
matters is a ratio against the classic notebook recipe (``shared/baselines/classic_charrnn.py``)
measured in the same run, on the same machine, at the same sizes; the step's own time is set
against the time its weights take to read on that machine (:mod:`step`). :func:`suite.run_bench`
collects everything; :mod:`report` writes it as JSON and as a Markdown table.
"""
