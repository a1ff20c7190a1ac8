"""``charbot eval``: loss of a checkpoint on a text, in nats and bits per character."""

from __future__ import annotations

import argparse

from bot.cli.common import add_json_flag, emit, load_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="mean cross-entropy of a checkpoint on a text (nats and bits per character)",
        description="Evaluate a checkpoint. By default the held-out split is used when the text is the one the "
        "checkpoint was trained on (same sha256), or a part of the mixture it was trained on (the base and tale: "
        "tale's own held-out split, which the base never trained on), else the whole text.",
    )
    p.add_argument("checkpoint")
    p.add_argument("text", help="a UTF-8 text file, a corpus name, or a mixture name (base)")
    p.add_argument("--split", choices=["auto", "val", "all"], default="auto",
                   help="val: the held-out split; all: the whole text; auto (default): val if it is held out for "
                        "the checkpoint")
    p.add_argument("--max-chars", type=int, help="evaluate only the first N characters of the split")
    p.add_argument("--device", default="cpu")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from corpora.heldout import heldout_of, heldout_split
    from model.checkpoint import load_checkpoint
    from model.device import pick_device
    from model.evaluate import bits, evaluate_loss, scored_chars

    ck = load_checkpoint(args.checkpoint, device=pick_device(args.device))
    data = load_text(args.text)
    held = heldout_of(ck.info, data)
    split = args.split
    if split == "auto":
        split = "val" if held is not None else "all"
    if split == "val":
        codes, _ = held if held is not None else heldout_split(ck.info, data)
    else:
        codes = data.codes()
    t0 = time.perf_counter()
    nats = evaluate_loss(ck.model, codes, max_chars=args.max_chars)
    seconds = time.perf_counter() - t0
    n = scored_chars(len(codes), args.max_chars)
    payload = {"checkpoint": args.checkpoint, "text": data.name, "split": split, "chars": n,
               "loss_nats": nats, "bpc": bits(nats), "seconds": round(seconds, 2),
               "recorded_val_loss_nats": ck.info.get("val_loss_nats")}
    human = f"{data.name} ({split}, {n:,} chars): {nats:.4f} nats/char, {bits(nats):.4f} bits/char"
    recorded = ck.info.get("val_loss_nats")
    if split == "val" and recorded is not None and args.max_chars is None:
        human += f" (recorded at training: {recorded:.4f} nats/char)"
    emit(args, payload, human)
    return 0
