"""The ledger's tables and their migrations: each version adds to the last, data is kept."""

from __future__ import annotations

from sqlalchemy import (
    Column, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Table, Text, UniqueConstraint,
)

metadata = MetaData()

# Times are UNIX seconds (float, UTC): sortable, comparable, no time-zone ambiguity.
# Text for whatever comes from outside (contact lists, SendGrid's events): PostgreSQL
# enforces VARCHAR lengths, and a long party name must not stop a campaign.

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)

campaigns = Table(
    "campaigns", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

letters = Table(
    "letters", metadata,
    Column("id", String(32), primary_key=True),              # stable: hash of campaign + email
    Column("campaign_id", Integer, ForeignKey("campaigns.id"), nullable=False),
    Column("email", String(320), nullable=False),
    Column("email_key", String(320), nullable=False),         # lower-cased: the recipient's identity
    Column("bioguide_id", String(16), nullable=False, default=""),
    Column("name", Text, nullable=False, default=""),
    Column("chamber", String(8), nullable=False, default=""),
    Column("state_code", String(2), nullable=False, default=""),
    Column("district", Integer),
    Column("party", Text, nullable=False, default=""),
    Column("committees", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("reason", Text),                                   # why failed / unknown / skipped
    Column("provider_message_id", String(128), index=True),   # not unique: mock servers repeat it
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float),                         # for retry_wait
    Column("claimed_by", String(64)),                         # the run that set `sending`
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("accepted_at", Float),
    Column("last_event", String(32)),
    Column("last_event_at", Float),
    Column("term_end", String(10)),                           # YYYY-MM-DD: the member's term, as the list said
    UniqueConstraint("campaign_id", "email_key", name="uq_letters_campaign_recipient"),
    Index("ix_letters_campaign_status", "campaign_id", "status"),
)

attempts = Table(
    "attempts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("letter_id", String(32), ForeignKey("letters.id"), nullable=False, index=True),
    Column("started_at", Float, nullable=False),
    Column("duration_ms", Integer),
    Column("transport", String(16), nullable=False),
    Column("outcome", String(16), nullable=False),            # accepted, retry, failed, unknown, throttled
    Column("http_status", Integer),
    Column("error", Text),
)

archive = Table(
    "archive", metadata,
    Column("letter_id", String(32), ForeignKey("letters.id"), primary_key=True),
    Column("subject", Text, nullable=False),
    Column("text_z", LargeBinary, nullable=False),            # zlib-compressed UTF-8
    Column("html_z", LargeBinary, nullable=False),
    Column("template_hash", String(64), nullable=False),
    Column("archived_at", Float, nullable=False),
)

locks = Table(
    "locks", metadata,
    Column("name", String(100), primary_key=True),            # "send:CAMPAIGN", "scheduler"
    Column("owner", String(64), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("host", String(255), nullable=False),
    Column("acquired_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)

campaign_state = Table(
    "campaign_state", metadata,
    Column("campaign_id", Integer, ForeignKey("campaigns.id"), primary_key=True),
    Column("paused", Integer, nullable=False, default=0),     # honoured by the scheduler at its next tick
    Column("ended_at", Float),                                # the scheduler found nothing left to send
    Column("updated_at", Float, nullable=False),
    Column("last_tick_at", Float),                            # when the scheduler last ran a tick of it
)


# What SendGrid's Event Webhook told us, every event kept (matched or not) so a
# letter's state can always be recomputed from its whole history.
events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("letter_id", String(32), ForeignKey("letters.id")),      # null: unmatched, or a --test-to copy
    Column("campaign_id", Integer, ForeignKey("campaigns.id")),     # the matched letter's campaign
    Column("matched_by", String(16)),                               # letter_id, message_id, email, test; null: none
    Column("event", Text, nullable=False),                          # processed, delivered, bounce, open, ...
    Column("type", Text),                                           # bounce: "bounce" or "blocked"
    Column("sg_event_id", Text),                                    # unique through dedupe_key
    Column("dedupe_key", Text, nullable=False),                     # "sg:" + sg_event_id, or a hash of the event
    Column("sg_message_id", Text),
    Column("email", Text),
    Column("occurred_at", Float, nullable=False),                   # the event's own timestamp
    Column("received_at", Float, nullable=False),
    Column("detail", Text),                                         # reason, response or url
    Column("raw", Text, nullable=False),                            # the event as SendGrid sent it (JSON)
    Index("ix_events_letter", "letter_id"),                         # also finds the unmatched (letter_id IS NULL)
    # An event repeated (SendGrid retrying, an export ingested twice) has the same time and
    # key; time first keeps inserts at the index's right edge instead of all over it.
    UniqueConstraint("occurred_at", "dedupe_key", name="uq_events_once"),
)


# Events that could not be used (malformed, not valid Unicode, nested too deep, dated before
# their letter or far ahead): kept whole for review, never applied to a letter.
events_set_aside = Table(
    "events_set_aside", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Column("raw", Text, nullable=False),                            # as sent (cut at 64 KiB)
    Column("dedupe_key", String(80), nullable=False, unique=True),  # a post sent again adds nothing
)


# Offices' replies to letters (Inbound Parse posts, or .eml/mbox files): kept as data, never
# served as HTML. A reply that matched no letter is kept for review (letter_id null).
replies = Table(
    "replies", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("letter_id", String(32), ForeignKey("letters.id")),      # null: unmatched
    Column("campaign_id", Integer, ForeignKey("campaigns.id")),
    Column("matched_by", String(16)),                               # address, thread, sender; null: none
    Column("dedupe_key", String(160), nullable=False, unique=True), # "mid:" + its Message-ID, or "sha256:" + hash
    Column("sender", String(320), nullable=False, default=""),
    Column("sender_name", Text, nullable=False, default=""),
    Column("sent_at", Float),                                       # its Date header
    Column("received_at", Float, nullable=False),
    Column("subject", Text, nullable=False, default=""),
    Column("text", Text, nullable=False, default=""),               # plain text (HTML converted), cut at 100,000
    Column("attachments", Text, nullable=False, default="[]"),      # JSON [[name, bytes], ...]; contents not kept
    Column("spam_score", Float),
    Column("spam_report", Text),
    Column("auto_reply", Text),                                     # why it is automatic; null: a person wrote it
    Column("problem", Text),                                        # why it could not be read (kept whole in raw_z)
    Column("raw_z", LargeBinary),                                   # zlib: only for a reply that could not be read
    Index("ix_replies_letter", "letter_id"),
)


# The dashboard's signed-in sessions: in the ledger, so every `serve` process (and host) knows
# them and a restart keeps them. Each is kept by an HMAC of its cookie under the token: the
# table opens nothing by itself, and a new token ends every session.
dashboard_sessions = Table(
    "dashboard_sessions", metadata,
    Column("key", String(64), primary_key=True),
    Column("ends_at", Float, nullable=False),
)


suppressions = Table(
    "suppressions", metadata,
    Column("email_key", String(320), primary_key=True),       # lower-cased address: never written to again
    Column("email", String(320), nullable=False),
    Column("reason", String(32), nullable=False),             # bounce, spamreport, unsubscribe, manual
    Column("detail", Text),                                   # the bounce text, or the operator's note
    Column("event_id", Integer),                              # the event that caused it, if any
    Column("created_at", Float, nullable=False),
)


# Each migration brings the database from version N-1 to N: the tables it creates,
# then any steps that change existing ones (SQL text, or a function of the connection).
# Data is kept.
MIGRATIONS: list[tuple[int, str, list[Table], list]] = [
    (1, "campaigns, letters, attempts, archive, locks",
     [campaigns, letters, attempts, archive, locks], []),
    (2, "campaign state for the scheduler (paused, ended)", [campaign_state], []),
    (3, "webhook events", [events], []),
    (4, "suppressed addresses", [suppressions], []),
    # Reports read a campaign's letters by state, chamber, party and state without
    # touching the rows, and its first delivery times without touching the events.
    (5, "indexes for reports", [], [
        "CREATE INDEX IF NOT EXISTS ix_letters_report ON letters "
        "(campaign_id, status, chamber, party, state_code, committees)",
        # ix_letters_report starts with (campaign_id, status): the old index is one too many
        # to keep up to date at every change of state.
        "DROP INDEX IF EXISTS ix_letters_campaign_status",
        "CREATE INDEX IF NOT EXISTS ix_letters_accepted ON letters (campaign_id, accepted_at)",
        "CREATE INDEX IF NOT EXISTS ix_events_timeline ON events (campaign_id, event, letter_id, occurred_at)",
    ]),
    # The scheduler keeps its own record of the last tick it ran (a missed tick is one
    # after it); APScheduler's job table, which held that before, is no longer used.
    (6, "the scheduler's last tick, in campaign_state", [], [
        lambda db: _add_column(db, "campaign_state", "last_tick_at", "FLOAT"),
        "DROP TABLE IF EXISTS scheduler_jobs",
    ]),
    # Reports mark the offices whose term has ended: a campaign may span a change of Congress.
    (7, "each letter's term end", [], [lambda db: _add_column(db, "letters", "term_end", "VARCHAR(10)")]),
    (8, "events set aside for review", [events_set_aside], []),
    (9, "offices' replies", [replies], []),
    (10, "the dashboard's sessions", [dashboard_sessions], []),
]


def _add_column(db, table: str, column: str, kind: str) -> None:
    """ALTER TABLE ... ADD COLUMN, unless the table was created with it (a new ledger)."""
    from sqlalchemy import inspect

    if column not in {c["name"] for c in inspect(db).get_columns(table)}:
        db.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
MIGRATIONS.sort(key=lambda m: m[0])
CURRENT_VERSION = MIGRATIONS[-1][0]
