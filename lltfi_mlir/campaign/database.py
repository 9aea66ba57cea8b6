"""One SQLite database per campaign: its configuration, sites, profile, and one row per trial.

Written by one process only (the campaign driver), in WAL mode with a commit every few hundred
trials; a trial row holds everything needed to replay it. Re-opening with the same campaign
resumes: trial ids already present are not run again.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

from ..errors import RunError, UsageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sites (
    id INTEGER PRIMARY KEY, function TEXT, opcode TEXT, type TEXT, register TEXT,
    node TEXT, op_type TEXT, layer INTEGER, dynamic_count INTEGER);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    input INTEGER NOT NULL, target INTEGER NOT NULL, fault_type TEXT NOT NULL, num_bits INTEGER,
    bit INTEGER, max_multiple INTEGER, window_len INTEGER, seed INTEGER NOT NULL,
    status TEXT NOT NULL, code INTEGER, outcome TEXT NOT NULL, activated INTEGER NOT NULL,
    site INTEGER, dyn_index INTEGER, mask TEXT, value_before TEXT, value_after TEXT,
    faults TEXT, deviation REAL, output BLOB, masked_at TEXT);
CREATE TABLE IF NOT EXISTS layer_trace (
    trial INTEGER NOT NULL, node TEXT NOT NULL, node_index INTEGER NOT NULL, corrupted INTEGER NOT NULL,
    size INTEGER NOT NULL, indices TEXT, golden TEXT, faulty TEXT, max_abs REAL, max_rel REAL,
    single_bit INTEGER, PRIMARY KEY (trial, node));
CREATE TABLE IF NOT EXISTS inst_trace (
    trial INTEGER NOT NULL, position INTEGER NOT NULL, site INTEGER NOT NULL, faulty TEXT NOT NULL,
    golden TEXT, PRIMARY KEY (trial, position));
"""
CAMPAIGN_TABLES = frozenset({"meta", "sites", "trials"})  # what makes a file a campaign database
TRIAL_COLUMNS = ("id", "input", "target", "fault_type", "num_bits", "bit", "max_multiple", "window_len", "seed",
                 "status", "code", "outcome", "activated", "site", "dyn_index", "mask", "value_before",
                 "value_after", "faults", "deviation", "output", "masked_at")
# Columns added after a release: (name, type); older databases get them when a campaign reopens them.
ADDED_TRIAL_COLUMNS = (("masked_at", "TEXT"),)  # the operator after which the trial ended early


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


class CampaignDatabase:
    """`create=True`: the campaign driver's read-write handle (creates the file and its tables).
    `create=False`: a reader's (results, trace, replay): opened read-only, never changed, and a file
    that is not a campaign database is refused instead of being given our tables."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if not create:
            if not self.path.is_file():
                raise UsageError(f"campaign database not found: {self.path}")
            self.conn = self._open_readonly()
            return
        if self.path.is_file() and self.path.stat().st_size:
            self._open_readonly().close()  # refuses a file that is not a campaign database, untouched
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.executescript(SCHEMA)
            present = {row[1] for row in self.conn.execute("PRAGMA table_info(trials)")}
            for name, kind in ADDED_TRIAL_COLUMNS:
                if name not in present:
                    self.conn.execute(f"ALTER TABLE trials ADD COLUMN {name} {kind}")
            # A file we may read but not write fails here, not with a traceback mid-campaign.
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('writable', 'true')")
            self.conn.rollback()
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"cannot write the campaign database {self.path}: {exc}") from None
        except OSError as exc:
            raise UsageError(f"cannot create the campaign database {self.path}: {exc.strerror}") from None

    def _open_readonly(self) -> sqlite3.Connection:
        """SQLite's read-only URI mode; refuses files without the campaign tables."""
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True)
            tables = _tables(conn)
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"{self.path} is not a campaign database ({exc})") from None
        if not tables >= CAMPAIGN_TABLES:
            conn.close()
            raise UsageError(f"{self.path} is not a campaign database (it has no "
                             f"{', '.join(sorted(CAMPAIGN_TABLES - tables))} table); give the .db file a campaign "
                             "wrote")
        return conn

    def close(self) -> None:
        self.conn.close()

    def has_column(self, table: str, column: str) -> bool:
        """Readers of databases written before a column existed ask first."""
        return column in {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}

    def get_meta(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value) -> None:
        with self._writing():
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
            self.conn.commit()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turns a failed write (disk full, file-size limit, file made read-only) into a one-line error."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise RunError(f"cannot write the campaign database {self.path}: {exc} (trials written so far "
                           "are kept; re-run the command to resume)") from None

    def bind_campaign(self, identity: dict) -> None:
        """Refuse to mix two different campaigns in one database."""
        existing = self.get_meta("identity")
        if existing is None:
            self.set_meta("identity", identity)
        elif existing != identity:
            changed = sorted(k for k in set(existing) | set(identity) if existing.get(k) != identity.get(k))
            if {"model", "weights"} & set(changed):
                why = ("it was written before weights were part of a campaign's identity"
                       if "weights" not in existing and existing.get("model") == identity.get("model")
                       else "its code or weights changed")
                raise UsageError(f"{self.path} holds a campaign of another model (content hash "
                                 f"{existing.get('model')}/{existing.get('weights', '-')}, this model "
                                 f"{identity.get('model')}/{identity.get('weights', '-')}: {why}); its trials "
                                 "cannot be resumed with this model: use another --db")
            raise UsageError(f"{self.path} holds a different campaign (differs in: {', '.join(changed)}); "
                             "use another --db or remove this file")

    def set_sites(self, rows: Iterable[tuple]) -> None:
        with self._writing():
            self.conn.execute("DELETE FROM sites")
            self.conn.executemany("INSERT INTO sites VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self.conn.commit()

    def done_ids(self) -> set[int]:
        return {row[0] for row in self.conn.execute("SELECT id FROM trials")}

    def add_trials(self, rows: list[dict]) -> None:
        with self._writing():
            self.conn.executemany(
                f"INSERT OR IGNORE INTO trials ({', '.join(TRIAL_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(TRIAL_COLUMNS))})",
                [tuple(r.get(c) for c in TRIAL_COLUMNS) for r in rows])
            self.conn.commit()

    def add_traces(self, layer_rows: list[tuple], inst_rows: list[tuple]) -> None:
        """Written in the same transaction as the trials (call before add_trials commits)."""
        self.conn.executemany("INSERT OR REPLACE INTO layer_trace VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              layer_rows)
        self.conn.executemany("INSERT OR REPLACE INTO inst_trace VALUES (?, ?, ?, ?, ?)", inst_rows)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

