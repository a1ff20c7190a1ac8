"""``charbot sample``: generate text from a checkpoint."""

from __future__ import annotations

import argparse
import re
import sys

from bot.cli.common import add_json_flag, emit

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str) -> str:
    """``\\n``, ``\\t`` and ``\\\\`` as typed in a shell become newline, tab and backslash; all else is kept.

    Not ``unicode_escape``: that codec reads the string as Latin-1 and garbles any non-ASCII text.
    """
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m.group(1)], text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate text from a checkpoint",
                       description="Generate text. The prime is normalized like all input and continued.")
    p.add_argument("checkpoint")
    p.add_argument("--prime", default="", help="text to continue (default: start of a line)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = always the likeliest character; up to 2")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--length", type=int, default=400, help="maximum characters to generate")
    p.add_argument("--stop", action="append", default=[],
                   help="stop string, not included in the output (repeatable); '\\n\\n' means a blank line")
    p.add_argument("--seed", type=int, help="same seed, same text")
    p.add_argument("--device", default="cpu")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.checkpoint import load_checkpoint
    from model.device import pick_device
    from model.sample import SampleSettings, stream

    stops = tuple(unescape(s) for s in args.stop)
    settings = SampleSettings(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              max_chars=args.length, stop=stops, seed=args.seed)
    ck = load_checkpoint(args.checkpoint, device=pick_device(args.device))
    run = stream(ck.model, [args.prime], settings)
    if args.json:
        for _ in run:
            pass
    else:
        from model.sample import prime_codes

        sys.stdout.write(prime_codes(args.prime)[0])
        for _, piece in run:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    g = run.generations[0]
    if args.json:
        emit(args, {"prime": g.prime, "text": g.text, "finish": g.finish, "seed": g.seed,
                    "dropped_chars": g.dropped}, "")
    return 0
