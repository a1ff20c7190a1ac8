"""Run the classic notebook script's training on a GPU, moved there the way notebooks do it.

The script is CPU-only as written. Notebooks that use a GPU add ``net.cuda()`` and
``inputs.cuda()``; this does exactly that and nothing more (NumPy one-hot batches, one
optimizer step per batch, no autocast), so the ratio against our GPU training is fair:

    python -m bot.bench.classic_on_gpu SCRIPT train --text FILE --hidden 512 ...
"""

from __future__ import annotations

import runpy
import sys

import torch


def main(argv: list[str]) -> None:
    script, *args = argv
    torch.set_default_device("cuda")  # the network and its zero states are made on the GPU
    from_numpy = torch.from_numpy
    torch.from_numpy = lambda array: from_numpy(array).cuda()  # type: ignore[assignment]  # inputs.cuda()
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
    torch.cuda.synchronize()


if __name__ == "__main__":
    main(sys.argv[1:])
