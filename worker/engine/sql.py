"""The transfer's SQL, top to bottom, in the order one attempt sends it.

Round trip 1 (one pipeline sync): ``BEGIN``, any earlier result for the
``transfer_id``, then the two balance updates, lower account id first (so crossing
transfers cannot deadlock on PostgreSQL). Round trip 2: the result row and ``COMMIT``,
or ``ROLLBACK`` and the rejection recorded in a transaction of its own. See
:mod:`worker.engine.attempt` for how the answers of round trip 1 decide round trip 2,
and ``docs/dsql-statements.md`` for what is sent on the wire per outcome and the DSQL
documentation behind each statement.
"""

from __future__ import annotations

from typing import LiteralString

from worker.results import RESULT_COLUMNS

BEGIN: LiteralString = "BEGIN ISOLATION LEVEL REPEATABLE READ"
COMMIT: LiteralString = "COMMIT"
ROLLBACK: LiteralString = "ROLLBACK"

# --- round trip 1: earlier outcome? then move the money ----------------------------

SELECT_RESULT: LiteralString = (
    "SELECT " + RESULT_COLUMNS + " FROM transfer_results WHERE transfer_id = %(transfer_id)s"
)

DEBIT: LiteralString = """
    UPDATE accounts SET balance = balance - %(amount)s
    WHERE id = %(payer_id)s
    RETURNING balance
"""

CREDIT: LiteralString = """
    UPDATE accounts SET balance = balance + %(amount)s
    WHERE id = %(payee_id)s
    RETURNING balance
"""

# --- round trip 2: record the outcome with the money movement, then COMMIT ----------

INSERT_RESULT: LiteralString = (
    "INSERT INTO transfer_results (" + RESULT_COLUMNS + ") VALUES ("
    " %(transfer_id)s, %(payer_id)s, %(payee_id)s, %(amount)s, %(status)s, %(reason)s,"
    " %(payer_balance)s, %(attempts)s, %(transaction_ms)s, %(enqueued_at)s, %(completed_at)s)"
)

# --- a rejection is recorded on its own, first writer wins ---------------------------

INSERT_REJECTION: LiteralString = (
    INSERT_RESULT + " ON CONFLICT (transfer_id) DO NOTHING RETURNING transfer_id"
)
