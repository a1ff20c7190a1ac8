"""What /finetune status and /model say about jobs and versions, as plain text (no Discord objects).

Kept out of the cog so the words can be tested without a Discord connection, and so a
terminal front end can print the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bot.jobs.manager import FinetuneManager
from bot.store.jobs import FAILED, REFUSED
from corpora.voices import display_name, owner
from model.evaluate import bits
from model.finetune import MIN_HELDOUT_CHARS


def who(started_by: str) -> str:
    """``discord:123`` becomes a mention (shown as the name; the bot's messages ping nobody)."""
    kind, _, name = started_by.partition(":")
    if kind == "discord" and name.isdigit():
        return f"<@{name}>"
    if kind == "cli":
        return f"{name} (command line)"
    return started_by


def seen_from(guild_id: int | None) -> Callable[[str], bool]:
    """What a server's admin may see: the built-in corpora's jobs and its own personas', never another
    server's (their names and errors are that server's business)."""
    return lambda corpus: owner(corpus) in (None, guild_id)


def _everything(_corpus: str) -> bool:
    return True


async def status_text(manager: FinetuneManager, corpus: str | None = None,
                      visible: Callable[[str], bool] = _everything) -> str:
    """Running jobs (here or in another process) and the queue, else the most recent jobs; only those
    ``visible`` allows (the cog passes :func:`seen_from` its server; the command line sees all)."""
    def shown(c: str) -> bool:
        return visible(c) and corpus in (None, c)

    lines = [job.status() for job in manager.jobs.values() if shown(job.corpus)]
    for row in await manager.store.running_jobs():
        if row.corpus in manager.jobs or not shown(row.corpus):
            continue
        step = (row.progress or {}).get("step")
        lines.append(f"Fine-tuning {display_name(row.corpus)} (job {row.id}) runs in another process "
                     f"({who(row.started_by)}, pid {row.owner_pid} on {row.owner_host})"
                     + (f", at step {step}." if step else "."))
    waiting = await manager.queue.waiting()
    for place, entry in enumerate(waiting, 1):
        if shown(entry.corpus):
            lines.append(f"Queued: {display_name(entry.corpus)} (entry {entry.id}, {place} of {len(waiting)} "
                         f"waiting, by {who(entry.started_by)}, since {entry.created}).")
    notes = [n for n, c in await forgotten_text(manager, corpus) if visible(c)]
    if lines:
        return "\n".join([*lines, *notes])
    recent = [r for r in await manager.store.recent_jobs(corpus, limit=20) if visible(r.corpus)][:3]
    head = f"No fine-tune{' of ' + display_name(corpus) if corpus else ''} is running or queued."
    if not recent:
        return head + " None has run yet; start one with `/finetune start`."
    out = [head + " Recent jobs:"]
    for row in recent:
        result = f"made v{row.version}" if row.version else row.state
        why = f": {row.error}" if row.error and row.state != "done" else ""
        if row.state == FAILED and (row.error or "").startswith(f"{REFUSED}:"):  # turned down by the guard
            result, why = REFUSED, f": {row.error.removeprefix(f'{REFUSED}:').strip()}"
        out.append(f"- job {row.id}, {display_name(row.corpus)}, by {who(row.started_by)}, {row.created}: "
                   f"{result}{why}"[:400])
    return "\n".join([*out, *notes])


async def forgotten_text(manager: FinetuneManager, corpus: str | None = None) -> list[tuple[str, str]]:
    """What /forget could not delete: the kept versions that learned from texts deleted since,
    and the version to go back to, each with its corpus. Shown until no kept version carries them."""
    out = []
    for f in await manager.store.forgotten(corpus):
        clean = await manager.store.last_clean(f.corpus)
        target = f"v{clean}" if clean else "the base checkpoint"
        out.append((f"Forgotten texts: {f.corpus} v{f.version}{' (served)' if f.served else ''} learned from "
                   f"{f.texts} text{'s' if f.texts != 1 else ''} that {f.members} member"
                   f"{'s' if f.members != 1 else ''} deleted with /forget; the newest version that never saw "
                   f"them is {target} (`/rollback {f.corpus} {clean}`).", f.corpus))
    return out


async def versions_text(manager: FinetuneManager, corpora: list[str] | tuple[str, ...]) -> str:
    """One line per corpus that has versions: what is served and what can be rolled back to."""
    lines = []
    for corpus in corpora:
        rows = await manager.store.versions(corpus)
        if not rows:
            continue
        served = await manager.served(corpus)
        kept = ", ".join(["base"] + [f"v{r.version}" for r in rows])
        line = f"**{corpus}** versions: serving **{served.label}**"
        current = next((r for r in rows if r.version == served.version), None)
        if current is not None:
            parent = f"v{current.parent_version}" if current.parent_version else "base"
            if current.job_id is None:
                source = Path(current.losses.get("imported_from", "a file")).name
                line += f" (imported from {source} by {who(current.started_by)}, {current.created[:10]}"
            else:
                line += (f" (fine-tuned from {parent} on {current.train_chars:,} contributed characters by "
                         f"{who(current.started_by)}, {current.created[:10]}")
            line += _losses_text(corpus, current.losses, current.heldout_chars) + ")"
        lines.append(f"{line}; kept: {kept}. `/rollback {corpus} [version]` restores one.")
    return "\n".join(lines)


def _change(before: float, after: float) -> str:
    return f"{before:.3f} -> {after:.3f} nats ({bits(before):.2f} -> {bits(after):.2f} bits/char)"


def _losses_text(corpus: str, losses: dict, heldout_chars: int) -> str:
    """Both held-out figures of a version, before and after, in nats and bits, on how much text;
    whether a figure is too thin to trust, and whether it was installed against the guard."""
    after, before = losses.get("after", {}), losses.get("before", {})
    guard = losses.get("guard") or {}
    least = guard.get("min_heldout_chars", MIN_HELDOUT_CHARS)
    out = ""
    if after.get("contributed") is not None and before.get("contributed") is not None:
        thin = ", too little text to trust" if heldout_chars < least else ""
        change = _change(before["contributed"], after["contributed"])
        out += f"; new text ({heldout_chars:,} held-out chars{thin}) {change}"
    if after.get("corpus") is not None and before.get("corpus") is not None:
        chars = losses.get("corpus_heldout_chars", 0)
        thin = ", too little text to trust" if chars < least else ""
        out += f", {corpus} text ({chars:,} chars{thin}) {_change(before['corpus'], after['corpus'])}"
    elif losses.get("corpus_note"):
        out += f", {corpus} text not measured ({losses['corpus_note']})"
    if guard.get("forced") and not guard.get("passed", True):
        out += "; installed by force against the checks"
    return out
