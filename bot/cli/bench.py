"""``charbot bench``: measure generation, concurrency, training, fidelity and reply quality in one run."""

from __future__ import annotations

import argparse
import sys

from bot.cli.common import UserError, add_env_file_flag, add_json_flag, emit


def _size(text: str) -> tuple[int, int]:
    try:
        layers, hidden = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size {text!r}: write it as LAYERSxHIDDEN, e.g. 2x512") from None
    if layers < 1 or hidden < 1:
        raise UserError(f"--size {text!r}: layers and hidden size must be at least 1")
    return layers, hidden


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: requests per second, comma-separated, e.g. 2,5,10,20") from None
    if min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: every rate must be positive")
    return rates


def register(sub: argparse._SubParsersAction) -> None:
    from bot.bench.capacity import LOADS, TRIGGERS, CapacityConfig
    from bot.bench.suite import SECTIONS

    p = sub.add_parser(
        "bench", help="measure generation and training speed against the classic recipe",
        description="Measure single-reply and concurrent generation (with each step path's time against the "
                    "weight-traffic floor and where a character's time goes), training speed, the fast paths' "
                    "fidelity and reply quality (--only quality), "
                    "each side by side with the classic notebook recipe in the same run. Writes bench.json and "
                    "bench.md into --out.")
    p.add_argument("--out", default="bench", help="folder for bench.json and bench.md (default: bench)")
    p.add_argument("--quick", action="store_true", help="small counts and short runs (seconds; for CI)")
    p.add_argument("--models", nargs="*", metavar="CHECKPOINT",
                   help="checkpoints to measure (default: the shipped ones, in CHARBOT_CHECKPOINT_DIR from the "
                        "environment or .env, else checkpoints/; give none for only --size models)")
    p.add_argument("--size", action="append", default=None, metavar="LxH",
                   help="a random-weight reference model of this size (repeatable; default 2x512)")
    p.add_argument("--chars", type=int, default=400, help="characters per reply (default 400)")
    p.add_argument("--train-seconds", type=float, default=20.0, help="seconds of training for each side")
    p.add_argument("--train-text", help="text file to train on (default: the tale corpus)")
    p.add_argument("--classic", help="path of classic_charrnn.py (default: ../shared/baselines/ beside the project)")
    p.add_argument("--threads", type=int,
                   help="torch threads for every side (default: the engine's default, 1 on machines with 2 cores)")
    p.add_argument("--only", nargs="+", choices=SECTIONS,
                   help="run only these sections (capacity runs only when named: it starts a bot and loads it)")
    cap = CapacityConfig()
    g = p.add_argument_group("capacity", "one `charbot run` process end to end against a fake Discord")
    g.add_argument("--loads", nargs="+", choices=LOADS, default=list(cap.loads),
                   help="closed: --people asking without pause; open: Poisson arrivals at each of --rates; "
                        "burst: --burst people at once (default: closed open)")
    g.add_argument("--triggers", nargs="+", choices=TRIGGERS, default=list(cap.triggers),
                   help="how people ask: /tale (slash) or @charbot (mention) (default: slash)")
    g.add_argument("--capacity-seconds", type=float, default=cap.seconds,
                   help=f"seconds of asking per closed or open run (default {cap.seconds:g})")
    g.add_argument("--people", type=int, default=cap.people, help=f"closed loop: people (default {cap.people})")
    g.add_argument("--rates", type=_rates, default=cap.rates,
                   help="open loop: arrivals per second, comma-separated (default 2,5,10,20)")
    g.add_argument("--burst", type=int, default=cap.burst, help=f"burst: people asking at once (default {cap.burst})")
    g.add_argument("--per-channel", type=int, default=cap.per_channel,
                   help=f"closed loop and burst: people to a channel (default {cap.per_channel}, the bot's "
                        "CHARBOT_MAX_PER_CHANNEL)")
    g.add_argument("--channels", type=int, default=cap.channels,
                   help=f"open loop: channels the requests go round-robin over (default {cap.channels})")
    g = p.add_argument_group("personas", "a server's persona: its reply quality, and many personas in one process")
    g.add_argument("--persona-checkpoint", help="a trained persona's checkpoint (e.g. charbot persona's version file)")
    g.add_argument("--persona-text", help="the text it learned: its lexicon, and for faq its passages")
    g.add_argument("--persona-style", choices=("story", "faq", "prose"), default="story")
    g.add_argument("--persona-servers", type=int, default=4, help="servers in the many-personas run (default 4)")
    g.add_argument("--persona-per-server", type=int, default=5, help="personas per server (default 5)")
    p.add_argument("--quality-seeds", type=int, default=None, metavar="K",
                   help="seeds per prompt in the quality section (default 3; about 100 resolve the invented-word "
                        "comparison to about 0.1 percentage points, at about 10 s per seed on 2 cores)")
    add_env_file_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bot.bench.capacity import CapacityConfig
    from bot.bench.report import write_report
    from bot.bench.suite import DEFAULT_SECTIONS, BenchConfig, run_bench
    from bot.config import read_env
    from corpora.shipped import checkpoint_dir

    if args.chars < 1:
        raise UserError("--chars must be at least 1")
    if args.train_seconds <= 0:
        raise UserError("--train-seconds must be positive")
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be at least 1")
    if args.quality_seeds is not None and args.quality_seeds < 1:
        raise UserError("--quality-seeds must be at least 1")
    if min(args.people, args.burst, args.per_channel, args.channels) < 1 or args.capacity_seconds <= 0:
        raise UserError("--people, --burst, --per-channel and --channels must be at least 1; "
                        "--capacity-seconds must be positive")
    if args.train_text and not Path(args.train_text).is_file():
        raise UserError(f"{args.train_text}: no such file")
    cfg = BenchConfig(
        out=Path(args.out), quick=args.quick, models=args.models,
        checkpoint_dir=checkpoint_dir(read_env(args.env_file)),
        sizes=[_size(s) for s in args.size] if args.size else [(2, 512)],
        chars=args.chars, train_seconds=args.train_seconds,
        train_text=Path(args.train_text) if args.train_text else None,
        classic_script=Path(args.classic) if args.classic else None, threads=args.threads,
        sections=tuple(args.only) if args.only else DEFAULT_SECTIONS, quality_seeds=args.quality_seeds,
        capacity=CapacityConfig(loads=tuple(args.loads), triggers=tuple(args.triggers), seconds=args.capacity_seconds,
                                people=args.people, rates=tuple(args.rates), burst=args.burst,
                                per_channel=args.per_channel, channels=args.channels),
    )
    if args.persona_checkpoint:
        from bot.bench.personas import PersonaBenchConfig

        for given in (args.persona_checkpoint, args.persona_text):
            if given and not Path(given).is_file():
                raise UserError(f"{given}: no such file")
        if min(args.persona_servers, args.persona_per_server) < 1:
            raise UserError("--persona-servers and --persona-per-server must be at least 1")
        cfg.personas = PersonaBenchConfig(
            Path(args.persona_checkpoint), Path(args.persona_text) if args.persona_text else None,
            args.persona_style, servers=args.persona_servers, per_server=args.persona_per_server)
    results = run_bench(cfg, say=lambda line: print(line, file=sys.stderr))
    js, md = write_report(results, cfg.out)
    emit(args, {"json": str(js), "markdown": str(md), "errors": results["errors"]}, md.read_text())
    return 1 if results["errors"] else 0
