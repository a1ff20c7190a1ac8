"""``charbot corpora``: list the registered corpora and fetch their files from their sources."""

from __future__ import annotations

import argparse
import hashlib

from bot.cli.common import UserError, add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpora", help="list the corpora and fetch their files",
                       description="The training texts the bot's personas are trained on. The raw files are not "
                       "part of the project: they are found in $CHARBOT_DATA_DIR (default: data/ in the project) or "
                       "../shared/corpora, and `charbot corpora fetch NAME` downloads them.")
    cs = p.add_subparsers(dest="corpora_command", required=True, metavar="ACTION")

    ls = cs.add_parser("list", help="each corpus, whether its file is here, and whether its checksum is right")
    add_json_flag(ls)
    ls.set_defaults(func=run_list)

    f = cs.add_parser("fetch", help="download a corpus file into the data folder and verify it",
                      description="Download a corpus into $CHARBOT_DATA_DIR (default: data/ in the project). The "
                      "file is written under a temporary name, checked against the registry (sha256 of the pinned "
                      "mirror, or the content check of the Gutenberg edition) and only then renamed into place; a "
                      "wrong file is deleted.")
    f.add_argument("name", help="corpus name (see: charbot corpora list)")
    f.add_argument("--source", help="which of the corpus's sources to use (default: the first, the pinned mirror)")
    f.add_argument("--url", help="download from this address instead; the file must still verify")
    f.add_argument("--force", action="store_true", help="download even if a verified copy is already present")
    f.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server (default 60)")
    add_json_flag(f)
    f.set_defaults(func=run_fetch)


def corpus_status(name: str) -> dict:
    """What ``corpora list`` reports for one corpus."""
    from corpora.registry import CORPORA, find_corpus_file

    corpus = CORPORA[name]
    path = find_corpus_file(name)
    row = {
        "name": name, "title": corpus.title, "description": corpus.description, "source": corpus.source,
        "url": corpus.url, "sha256": corpus.sha256, "filename": corpus.filename,
        "sources": [{"id": d.id, "url": d.url, "sha256": d.sha256, "note": d.note} for d in corpus.downloads],
        "cleaning": corpus.cleaning, "held_out": corpus.held_out, "val_fraction": corpus.val_fraction,
        "stop": list(corpus.stop), "example_prime": corpus.prime(corpus.example_prompt),
        "present": path is not None, "path": str(path) if path else None, "bytes": None,
        "file_sha256": None, "verified": False, "matches": None,
    }
    if path is not None:
        raw = path.read_bytes()
        match = corpus.identify(raw)
        row.update(bytes=len(raw), file_sha256=hashlib.sha256(raw).hexdigest(), verified=match is not None,
                   matches=match.id if match else None)
    return row


def run_list(args: argparse.Namespace) -> int:
    from corpora.registry import CORPORA, data_dir, search_dirs

    rows = [corpus_status(name) for name in CORPORA]
    lines = []
    for r in rows:
        if not r["present"]:
            state = f"missing (get it: charbot corpora fetch {r['name']})"
        elif r["verified"]:
            state = f"present, sha256 OK ({r['matches']}), {r['bytes']:,} bytes: {r['path']}"
        else:
            state = (f"present but NOT a known edition (sha256 {r['file_sha256'][:16]}...): {r['path']}; "
                     f"replace it: charbot corpora fetch {r['name']} --force")
        lines.append(f"{r['name']:<6} {r['title']}\n       {state}")
    looked = ", ".join(str(d) for d in search_dirs())
    lines.append(f"searched: {looked}; fetch writes to {data_dir()}")
    payload = {"corpora": rows, "search_dirs": [str(d) for d in search_dirs()], "data_dir": str(data_dir())}
    emit(args, payload, "\n".join(lines))
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from corpora.fetch import fetch
    from corpora.registry import CORPORA

    if args.name not in CORPORA:
        raise UserError(f"unknown corpus {args.name!r} (corpora: {', '.join(CORPORA)})")
    if args.timeout <= 0:
        raise UserError("--timeout must be positive")
    result = fetch(args.name, source=args.source, url=args.url, force=args.force, timeout=args.timeout)
    payload = {"name": result.name, "path": str(result.path), "bytes": result.bytes, "sha256": result.sha256,
               "matches": result.matched, "downloaded": result.downloaded, "url": result.url}
    if result.downloaded:
        human = (f"fetched {result.name}: {result.bytes:,} bytes from {result.url}, verified ({result.matched}), "
                 f"saved to {result.path}")
    else:
        human = (f"{result.name} is already here, verified ({result.matched}): {result.path} "
                 f"(use --force to download it again)")
    emit(args, payload, human)
    return 0
