"""The database's schema: the ordered migrations that build it, in SQLite's dialect.

One list for every backend: :mod:`bot.store.sqlite` runs the scripts as written and
:mod:`bot.store.postgres` translates their types, so the tables are described once. Each entry is
one SQL script, applied once, in order, in its own transaction, and the number applied is kept
in ``schema_version``. Append new scripts at the end; never edit or reorder the ones already
shipped (a database a released charbot migrated must stay valid).
"""

from __future__ import annotations

# The one-row table recording how many MIGRATIONS a database has had; created before them.
SCHEMA_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
)

MIGRATIONS: list[str] = [
    # 1: the core tables of the bot.
    """
    CREATE TABLE user_settings (
        guild_id    INTEGER NOT NULL,
        user_id     INTEGER NOT NULL,
        temperature REAL CHECK (temperature IS NULL OR (temperature >= 0 AND temperature <= 2)),
        PRIMARY KEY (guild_id, user_id)
    );
    CREATE TABLE contributions (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id   INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        user_id    INTEGER NOT NULL,
        corpus     TEXT NOT NULL,
        text       TEXT NOT NULL,
        created    TEXT NOT NULL,
        source     TEXT NOT NULL CHECK (source IN ('modal', 'listen', 'cli'))
    );
    CREATE INDEX contributions_by_user ON contributions (guild_id, user_id);
    CREATE INDEX contributions_by_corpus ON contributions (corpus, guild_id);
    CREATE TABLE listening_channels (
        guild_id   INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        corpus     TEXT NOT NULL,
        PRIMARY KEY (guild_id, channel_id)
    );
    CREATE TABLE opt_outs (
        guild_id INTEGER NOT NULL,
        user_id  INTEGER NOT NULL,
        created  TEXT NOT NULL,
        PRIMARY KEY (guild_id, user_id)
    );
    """,
    # 2: fine-tuning jobs and the numbered checkpoint versions they make (bot.jobs).
    # At most one running job per corpus, and at most one served version per corpus (none
    # served means the configured base checkpoint is).
    """
    CREATE TABLE jobs (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        kind       TEXT NOT NULL DEFAULT 'finetune',
        corpus     TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed', 'cancelled')),
        started_by TEXT NOT NULL,
        guild_id   INTEGER,
        channel_id INTEGER,
        owner_pid  INTEGER,
        owner_host TEXT,
        params     TEXT NOT NULL,
        created    TEXT NOT NULL,
        finished   TEXT,
        progress   TEXT,
        report     TEXT,
        version    INTEGER,
        error      TEXT
    );
    CREATE UNIQUE INDEX one_running_job_per_corpus ON jobs (corpus) WHERE state = 'running';
    CREATE TABLE checkpoint_versions (
        corpus         TEXT NOT NULL,
        version        INTEGER NOT NULL CHECK (version >= 1),
        path           TEXT NOT NULL,
        parent_version INTEGER,
        parent_path    TEXT NOT NULL,
        job_id         INTEGER REFERENCES jobs (id),
        started_by     TEXT NOT NULL,
        contributions  INTEGER NOT NULL,
        train_chars    INTEGER NOT NULL,
        heldout_chars  INTEGER NOT NULL,
        losses         TEXT NOT NULL,
        created        TEXT NOT NULL,
        served         INTEGER NOT NULL DEFAULT 0 CHECK (served IN (0, 1)),
        pruned         INTEGER NOT NULL DEFAULT 0 CHECK (pruned IN (0, 1)),
        PRIMARY KEY (corpus, version)
    );
    CREATE UNIQUE INDEX one_served_version_per_corpus ON checkpoint_versions (corpus) WHERE served = 1;
    """,
    # 3: provenance (issue 17): which contributions each version learned from, its parent's
    # included, so /forget can say which versions still carry a member's texts. A row outlives
    # the contribution it names (that is the point); it keeps a SHA-256 of the text, never the text.
    # forgotten_shingles: the one-way hashed windows of deleted texts, for the verbatim-copy guard
    # (bot.core.verbatim) to keep a model from reciting them; never the text.
    """
    CREATE TABLE version_provenance (
        corpus          TEXT NOT NULL,
        version         INTEGER NOT NULL,
        contribution_id INTEGER NOT NULL,
        guild_id        INTEGER NOT NULL,
        user_id         INTEGER NOT NULL,
        digest          TEXT NOT NULL,
        PRIMARY KEY (corpus, version, contribution_id),
        FOREIGN KEY (corpus, version) REFERENCES checkpoint_versions (corpus, version)
    );
    CREATE INDEX provenance_by_member ON version_provenance (guild_id, user_id);
    CREATE INDEX provenance_by_contribution ON version_provenance (contribution_id);
    CREATE TABLE forgotten_shingles (
        corpus TEXT NOT NULL,
        hash   INTEGER NOT NULL,
        PRIMARY KEY (corpus, hash)
    );
    """,
    # 4: conversation (issue 23). channel_settings: a channel's persona, whether mentions are
    # answered there, and chiming in uninvited (off unless an admin sets a chance). posted_replies:
    # what the Continue and Another buttons under a reply need after a restart: the end of the
    # bot's own text always; the asker's words (and the chain before them) only while the asker
    # has not opted out, deleted by /forget, and every row once its buttons expire.
    """
    CREATE TABLE channel_settings (
        guild_id      INTEGER NOT NULL,
        channel_id    INTEGER NOT NULL,
        persona       TEXT,
        mentions      INTEGER NOT NULL DEFAULT 1 CHECK (mentions IN (0, 1)),
        chime_chance  REAL NOT NULL DEFAULT 0 CHECK (chime_chance >= 0 AND chime_chance <= 1),
        chime_every_s REAL NOT NULL DEFAULT 600 CHECK (chime_every_s >= 0),
        updated_by    INTEGER NOT NULL,
        updated       TEXT NOT NULL,
        PRIMARY KEY (guild_id, channel_id)
    );
    CREATE TABLE posted_replies (
        message_id INTEGER PRIMARY KEY,
        guild_id   INTEGER,
        channel_id INTEGER NOT NULL,
        asker_id   INTEGER NOT NULL,
        corpus     TEXT NOT NULL,
        made_by    TEXT NOT NULL,
        prompt     TEXT,
        context    TEXT,
        tail       TEXT NOT NULL,
        seed       INTEGER,
        created    TEXT NOT NULL
    );
    CREATE INDEX posted_replies_by_asker ON posted_replies (guild_id, asker_id);
    CREATE INDEX posted_replies_by_age ON posted_replies (created);
    """,
    # 5: a server's own personas (issue 24). A persona's text is stored as contributions under its key
    # (corpora.voices.persona_key), so /forget, /optout, the verbatim-copy guard and provenance cover it
    # like any contributed text; ``filename`` says which uploaded file a contribution came from (NULL for
    # typed or collected text). Deleting a persona deletes its row, its texts and its versions' rows.
    # job_queue: fine-tunes waiting for a machine with room; whichever process has room claims the oldest.
    """
    ALTER TABLE contributions ADD COLUMN filename TEXT;
    CREATE TABLE personas (
        guild_id   INTEGER NOT NULL,
        name       TEXT NOT NULL,
        style      TEXT NOT NULL CHECK (style IN ('story', 'faq', 'prose')),
        created_by INTEGER NOT NULL,
        created    TEXT NOT NULL,
        chars      INTEGER NOT NULL,
        files      TEXT NOT NULL,
        PRIMARY KEY (guild_id, name)
    );
    CREATE TABLE job_queue (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        corpus     TEXT NOT NULL,
        started_by TEXT NOT NULL,
        guild_id   INTEGER,
        channel_id INTEGER,
        minutes    REAL,
        forced     INTEGER NOT NULL DEFAULT 0 CHECK (forced IN (0, 1)),
        created    TEXT NOT NULL,
        claimed_by TEXT
    );
    """,
    # 6: at most one queue entry per corpus. Two admins retraining one persona at the same instant could
    # both pass the "already waiting" check and queue the same training twice; the index makes the second
    # insert a no-op on every backend (JobQueue.put). A duplicate already queued trains the same text
    # as the entry before it, so it is dropped.
    """
    DELETE FROM job_queue WHERE id NOT IN (SELECT MIN(id) FROM job_queue GROUP BY corpus);
    CREATE UNIQUE INDEX one_queued_job_per_corpus ON job_queue (corpus);
    """,
]
