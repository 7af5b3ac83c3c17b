"""The job store: one SQLite file under ``--data-dir``, shared by every worker process.

Workers never talk to each other: they claim queued jobs with one atomic UPDATE, report
progress with a heartbeat, and a job whose worker stopped reporting (a crash, a kill,
a restart) is put back in the queue, or marked failed with its reason once it has used
its attempts.  That is all the coordination there is; a deployment beyond one machine
swaps this file for a server database (README, "Serving").
"""
from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    error TEXT,
    request TEXT NOT NULL,
    result TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    heartbeat_at REAL,
    cancel INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at);
"""


@dataclass
class Job:
    id: str
    kind: str
    state: str
    progress: float
    error: str | None
    request: dict
    result: dict | None
    attempts: int
    owner: str | None
    heartbeat_at: float | None
    cancel: bool
    created_at: float
    updated_at: float
    finished_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        d = dict(row)
        d["request"] = json.loads(d["request"])
        d["result"] = json.loads(d["result"]) if d["result"] else None
        d["cancel"] = bool(d["cancel"])
        return cls(**d)


class JobStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")  # readers never wait for the one writer
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextmanager
    def _tx(self):
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- create / read -----------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def create(self, job_id: str, kind: str, request: dict) -> Job:
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT INTO jobs (id, kind, state, request, created_at, updated_at) VALUES (?, ?, 'queued', ?, ?, ?)",
                       (job_id, kind, json.dumps(request), now, now))
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def all(self) -> list[Job]:
        with closing(self._connect()) as db:
            return [Job.from_row(r) for r in db.execute("SELECT * FROM jobs ORDER BY created_at")]

    # -- the worker's side ---------------------------------------------------------
    def claim(self, owner: str) -> Job | None:
        """Take the oldest queued job for ``owner``, atomically (two workers never get the same job)."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE state = 'queued' AND cancel = 0 ORDER BY created_at LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = 'running', owner = ?, heartbeat_at = ?, updated_at = ?, "
                       "attempts = attempts + 1 WHERE id = ?", (owner, now, now, row["id"]))
        return self.get(row["id"])

    def heartbeat(self, job_id: str, owner: str, progress: float | None = None) -> bool:
        """Report that ``owner`` still runs the job; False when it should stop (cancelled, or taken over)."""
        now = time.time()
        with self._tx() as db:
            if progress is None:
                cur = db.execute("UPDATE jobs SET heartbeat_at = ?, updated_at = ? WHERE id = ? AND owner = ? "
                                 "AND state = 'running' AND cancel = 0", (now, now, job_id, owner))
            else:
                cur = db.execute("UPDATE jobs SET heartbeat_at = ?, updated_at = ?, progress = ? WHERE id = ? AND owner = ? "
                                 "AND state = 'running' AND cancel = 0", (now, now, float(progress), job_id, owner))
            return cur.rowcount == 1

    def finish(self, job_id: str, owner: str, state: str, result: dict | None = None, error: str | None = None) -> bool:
        assert state in FINISHED
        now = time.time()
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET state = ?, result = ?, error = COALESCE(?, error), progress = CASE WHEN ? = 'succeeded' "
                             "THEN 1 ELSE progress END, finished_at = ?, updated_at = ?, owner = NULL "
                             "WHERE id = ? AND owner = ? AND state = 'running'",
                             (state, json.dumps(result) if result is not None else None, error, state, now, now, job_id, owner))
            return cur.rowcount == 1

    def recover(self, lease_s: float, max_attempts: int) -> list[tuple[str, str]]:
        """Jobs whose worker stopped reporting: back to the queue, or failed once out of attempts.

        Returns ``(id, new state)`` for each job recovered.
        """
        now = time.time()
        changed = []
        with self._tx() as db:
            rows = db.execute("SELECT id, attempts, cancel FROM jobs WHERE state = 'running' AND heartbeat_at < ?",
                              (now - lease_s,)).fetchall()
            for row in rows:
                if row["cancel"]:
                    db.execute("UPDATE jobs SET state = 'cancelled', owner = NULL, finished_at = ?, updated_at = ? "
                               "WHERE id = ?", (now, now, row["id"]))
                    changed.append((row["id"], "cancelled"))
                elif row["attempts"] >= max_attempts:
                    reason = (f"interrupted {row['attempts']} times (the server stopped or crashed while it ran); "
                              "giving up; submit it again")
                    db.execute("UPDATE jobs SET state = 'failed', error = ?, owner = NULL, finished_at = ?, updated_at = ? "
                               "WHERE id = ?", (reason, now, now, row["id"]))
                    changed.append((row["id"], "failed"))
                else:
                    db.execute("UPDATE jobs SET state = 'queued', owner = NULL, error = ?, updated_at = ? WHERE id = ?",
                               ("interrupted by a server restart; resumed", now, row["id"]))
                    changed.append((row["id"], "queued"))
        return changed

    # -- the client's side ---------------------------------------------------------
    def cancel(self, job_id: str) -> Job | None:
        """Ask for a job to stop and go away; a queued or finished one is cancelled at once."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE jobs SET cancel = 1, updated_at = ? WHERE id = ?", (now, job_id))
            db.execute("UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE id = ? AND state = 'queued'",
                       (now, job_id))
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def expired(self, retention_s: float) -> list[Job]:
        """Finished (or cancelled, not running) jobs older than the retention time."""
        cutoff = time.time() - retention_s
        with closing(self._connect()) as db:
            rows = db.execute("SELECT * FROM jobs WHERE (state IN ('succeeded', 'failed', 'cancelled') AND "
                              "COALESCE(finished_at, updated_at) < ?) OR (cancel = 1 AND state != 'running')",
                              (cutoff,)).fetchall()
        return [Job.from_row(r) for r in rows]
