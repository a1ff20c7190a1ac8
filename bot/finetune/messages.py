"""What /finetune status and /model say about jobs and versions, as plain text (no Discord objects).

Kept out of the cog so the words can be tested without a Discord connection, and so a
terminal front end can print the same thing.
"""

from __future__ import annotations

from pathlib import Path

from bot.finetune.manager import FinetuneManager
from model.evaluate import bits


def who(started_by: str) -> str:
    """``discord:123`` becomes a mention (shown as the name; the bot's messages ping nobody)."""
    kind, _, name = started_by.partition(":")
    if kind == "discord" and name.isdigit():
        return f"<@{name}>"
    if kind == "cli":
        return f"{name} (command line)"
    return started_by


async def status_text(manager: FinetuneManager, corpus: str | None = None) -> str:
    """Running jobs (here or in another process), else the most recent ones."""
    lines = [job.status() for job in manager.jobs.values() if corpus in (None, job.corpus)]
    for row in await manager.store.running_jobs():
        if row.corpus in manager.jobs or corpus not in (None, row.corpus):
            continue
        step = (row.progress or {}).get("step")
        lines.append(f"Fine-tuning {row.corpus} (job {row.id}) runs in another process ({who(row.started_by)}, "
                     f"pid {row.owner_pid} on {row.owner_host})" + (f", at step {step}." if step else "."))
    if lines:
        return "\n".join(lines)
    recent = await manager.store.recent_jobs(corpus, limit=3)
    head = f"No fine-tune{' of ' + corpus if corpus else ''} is running."
    if not recent:
        return head + " None has run yet; start one with `/finetune start`."
    out = [head + " Recent jobs:"]
    for row in recent:
        result = f"made v{row.version}" if row.version else row.state
        why = f": {row.error}" if row.error and row.state != "done" else ""
        out.append(f"- job {row.id}, {row.corpus}, by {who(row.started_by)}, {row.created}: {result}{why}"[:400])
    return "\n".join(out)


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
            after = current.losses.get("after", {})
            before = current.losses.get("before", {})
            if after.get("contributed") and before.get("contributed"):
                line += (f"; new text {bits(before['contributed']):.2f} -> {bits(after['contributed']):.2f} "
                         "bits/char")
            if after.get("corpus") and before.get("corpus"):
                line += f", {corpus} text {bits(before['corpus']):.2f} -> {bits(after['corpus']):.2f}"
            line += ")"
        lines.append(f"{line}; kept: {kept}. `/rollback {corpus} [version]` restores one.")
    return "\n".join(lines)
