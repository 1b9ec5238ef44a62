"""The transfer's SQL, top to bottom: one round trip, whatever the outcome.

Two ways to send the same transfer, chosen by ``ENGINE_STATEMENTS``:

``single`` (the default): :data:`TRANSFER`, one statement sent alone as its own
implicit transaction. It reads any earlier result, decides, records the outcome and
moves the money, each step a ``WITH`` clause reading the one before. One round trip,
one statement to parse and plan, and the transaction never stays open across a
round trip, which is what makes conflicts rare. Data-modifying statements inside
``WITH`` are accepted by DSQL's grammar (awslabs' dsql-lint grammar, derived from a
real cluster) but not described in the user guide: ``python -m producer smoke`` says
whether a cluster takes it.

``pipelined``: :data:`PIPELINED`, the same steps as separate statements that the DSQL
user guide documents one by one (``INSERT ... SELECT``, ``ON CONFLICT DO NOTHING``,
``UPDATE ... WHERE EXISTS``), queued between ``BEGIN`` and ``COMMIT`` and sent with a
single pipeline sync: also one round trip. The money moves only where this attempt's
own result row (found by its ``attempt_id``) says committed, because a row written by
an earlier delivery must never move it again.

Both decide on the transaction's snapshot, so both need snapshot isolation: DSQL has
nothing else, and PostgreSQL connections are opened with
``default_transaction_isolation = 'repeatable read'`` (see :mod:`worker.db`). At READ
COMMITTED the UPDATE would re-read a row another transfer had just changed and could
drive a balance negative; at REPEATABLE READ PostgreSQL refuses that with 40001 and
DSQL refuses it at COMMIT (OC000), and the retry loop runs the attempt again.

``docs/dsql-statements.md`` has what each sends on the wire per outcome.
"""

from __future__ import annotations

from typing import LiteralString

from worker.results import RESULT_COLUMNS


# The verdict, from the snapshot's balances. NULL means the money may move; anything
# else is the rejection reason. A reason the client already knows (same_account,
# invalid_amount: no account needs reading) comes in as %(reason)s and wins.
# (The last WHEN: the credit must still fit numeric(18,6). The SQL itself carries no
# comments: they would be sent, and logged, with every transfer.)
def _verdict(reason: LiteralString, amount: LiteralString) -> LiteralString:
    """The CASE deciding a transfer: ``reason`` and ``amount`` are the SQL for the
    reason validation found (or NULL) and the amount, a parameter or a column."""
    return (
        """
        CASE
            WHEN """
        + reason
        + " IS NOT NULL THEN "
        + reason
        + """
            WHEN payer.balance IS NULL THEN 'payer_not_found'
            WHEN payee.balance IS NULL THEN 'payee_not_found'
            WHEN payer.balance < """
        + amount
        + """ THEN 'insufficient_funds'
            WHEN payee.balance + """
        + amount
        + """ >= %(amount_limit)s::numeric
                THEN 'balance_overflow'
        END"""
    )


_VERDICT = _verdict("%(reason)s::varchar", "%(amount)s::numeric")

# Both balances as one row, NULL where the account does not exist.
_BALANCES: LiteralString = """
        (SELECT
            (SELECT balance FROM accounts WHERE id = %(payer_id)s) AS balance) AS payer,
        (SELECT
            (SELECT balance FROM accounts WHERE id = %(payee_id)s) AS balance) AS payee"""

# The result row's values, given the verdict column ``reason`` and the payer's balance.
# transaction_ms is a commit's server-side time: the statement's age when its row is
# built (a row cannot hold the time of its own COMMIT).
_ROW: LiteralString = """
        %(transfer_id)s, %(payer_id)s, %(payee_id)s, %(recorded_amount)s,
        CASE WHEN reason IS NULL THEN 'committed' ELSE 'rejected' END, reason,
        CASE WHEN reason IS NULL THEN payer_balance - %(amount)s::numeric END,
        %(attempts)s,
        CASE WHEN reason IS NULL
            THEN 1000 * extract(epoch FROM clock_timestamp() - statement_timestamp())
        END,
        %(enqueued_at)s, %(completed_at)s"""

# Both balance changes in one UPDATE by primary key: the payer's by -amount, the
# payee's by +amount. One statement locks (on PostgreSQL) the two rows in index order,
# so crossing transfers cannot deadlock.
_MOVE: LiteralString = """
    UPDATE accounts
    SET balance = balance
        + CASE WHEN id = %(payer_id)s THEN -%(amount)s::numeric ELSE %(amount)s::numeric END
    WHERE id IN (%(payer_id)s, %(payee_id)s)"""

TRANSFER: LiteralString = (
    "WITH"
    # 1. An earlier delivery's result: if there is one, nothing else happens.
    " earlier AS (SELECT " + RESULT_COLUMNS + " FROM transfer_results"
    " WHERE transfer_id = %(transfer_id)s),"
    # 2. The verdict, on this snapshot's balances (no row at all after a repeat).
    " decided AS (SELECT" + _VERDICT + " AS reason, payer.balance AS payer_balance"
    " FROM" + _BALANCES + " WHERE NOT EXISTS (SELECT 1 FROM earlier)),"
    # 3. The outcome, recorded once: first writer wins. A row another delivery
    #    committed after our snapshot makes PostgreSQL raise 40001 here and DSQL fail
    #    the COMMIT (OC000): the retry then finds it as `earlier`.
    " recorded AS (INSERT INTO transfer_results (" + RESULT_COLUMNS + ")"
    " SELECT" + _ROW + " FROM decided"
    " ON CONFLICT (transfer_id) DO NOTHING"
    " RETURNING status, reason, payer_balance, transaction_ms),"
    # 4. The money moves only when step 3 recorded a commit.
    " moved AS (" + _MOVE + " AND EXISTS (SELECT 1 FROM recorded WHERE status = 'committed')"
    " RETURNING id)"
    # One row: the earlier result (or NULLs), what this statement recorded (or NULLs),
    # and how many balances it changed (2 for a commit, else 0).
    " SELECT earlier.*, recorded.status, recorded.reason, recorded.payer_balance,"
    " recorded.transaction_ms, (SELECT count(*) FROM moved) AS moved"
    " FROM (SELECT 1) AS one LEFT JOIN earlier ON true LEFT JOIN recorded ON true"
)
"""The whole transfer as one statement (``ENGINE_STATEMENTS=single``)."""

# --- k transfers in one statement, for accounts that do not conflict ----------------

TRANSFERS: LiteralString = (
    "WITH"
    # The batch as rows: one per transfer, the arrays in the same order. The
    # dispatcher only batches transfers on disjoint accounts, so each account row
    # below changes at most once.
    " input AS (SELECT * FROM unnest(%(ordinal)s::int[], %(transfer_id)s::uuid[],"
    " %(payer_id)s::int[], %(payee_id)s::int[], %(amount)s::numeric[],"
    " %(recorded_amount)s::numeric[], %(reason)s::varchar[], %(enqueued_at)s::timestamptz[])"
    " AS i (ordinal, transfer_id, payer_id, payee_id, amount, recorded_amount, given_reason,"
    " enqueued_at)),"
    # 1-4 as in TRANSFER, for every row at once.
    " earlier AS (SELECT " + RESULT_COLUMNS + " FROM transfer_results"
    " WHERE transfer_id IN (SELECT transfer_id FROM input)),"
    " decided AS (SELECT i.*," + _verdict("i.given_reason", "i.amount") + " AS reason,"
    " payer.balance AS payer_balance FROM input AS i"
    " LEFT JOIN accounts AS payer ON payer.id = i.payer_id"
    " LEFT JOIN accounts AS payee ON payee.id = i.payee_id"
    " WHERE NOT EXISTS (SELECT 1 FROM earlier AS e WHERE e.transfer_id = i.transfer_id)),"
    " recorded AS (INSERT INTO transfer_results (" + RESULT_COLUMNS + ")"
    " SELECT transfer_id, payer_id, payee_id, recorded_amount,"
    " CASE WHEN reason IS NULL THEN 'committed' ELSE 'rejected' END, reason,"
    " CASE WHEN reason IS NULL THEN payer_balance - amount END, 1,"
    " CASE WHEN reason IS NULL"
    " THEN 1000 * extract(epoch FROM clock_timestamp() - statement_timestamp()) END,"
    " enqueued_at, %(completed_at)s FROM decided"
    " ON CONFLICT (transfer_id) DO NOTHING"
    " RETURNING transfer_id, status, reason, payer_balance, transaction_ms),"
    # Each committed transfer's two balance changes, then one UPDATE for all of them.
    " moves AS (SELECT d.payer_id AS id, -d.amount AS delta FROM decided AS d"
    " JOIN recorded AS r ON r.transfer_id = d.transfer_id WHERE r.status = 'committed'"
    " UNION ALL SELECT d.payee_id, d.amount FROM decided AS d"
    " JOIN recorded AS r ON r.transfer_id = d.transfer_id WHERE r.status = 'committed'),"
    " moved AS (UPDATE accounts AS a SET balance = a.balance + m.delta FROM moves AS m"
    " WHERE a.id = m.id RETURNING a.id)"
    # One row per transfer, in input order: as TRANSFER's row, after its ordinal.
    " SELECT i.ordinal, e.transfer_id, e.payer_id, e.payee_id, e.amount, e.status,"
    " e.reason, e.payer_balance, e.attempts, e.transaction_ms, e.enqueued_at,"
    " e.completed_at, r.status, r.reason, r.payer_balance, r.transaction_ms,"
    " (SELECT count(*) FROM moved)"
    " FROM input AS i LEFT JOIN earlier AS e ON e.transfer_id = i.transfer_id"
    " LEFT JOIN recorded AS r ON r.transfer_id = i.transfer_id ORDER BY i.ordinal"
)
"""Up to ``TRANSFER_BATCH`` transfers on disjoint accounts in one statement."""

# --- the pipelined variant: documented statements, one sync ---------------------------

# The grammar's own form (its BEGIN rule has no isolation clause): the same messages.
BEGIN: LiteralString = "START TRANSACTION ISOLATION LEVEL REPEATABLE READ"
COMMIT: LiteralString = "COMMIT"

SELECT_RESULT: LiteralString = (
    "SELECT " + RESULT_COLUMNS + " FROM transfer_results WHERE transfer_id = %(transfer_id)s"
)

RECORD: LiteralString = (
    """
    INSERT INTO transfer_results ("""
    + RESULT_COLUMNS
    + """, attempt_id)
    SELECT"""
    + _ROW
    + """, %(attempt_id)s
    FROM (
        SELECT"""
    + _VERDICT
    + """ AS reason,
            payer.balance AS payer_balance
        FROM"""
    + _BALANCES
    + """
    ) AS decided
    WHERE NOT EXISTS (
        SELECT 1 FROM transfer_results WHERE transfer_id = %(transfer_id)s
    )
    ON CONFLICT (transfer_id) DO NOTHING
    RETURNING status, reason, payer_balance, transaction_ms
"""
)
"""Decide and record (``INSERT ... SELECT``), unless an earlier result exists."""

MOVE: LiteralString = (
    _MOVE
    + """
      AND EXISTS (
        SELECT 1 FROM transfer_results
        WHERE transfer_id = %(transfer_id)s AND attempt_id = %(attempt_id)s
          AND status = 'committed'
    )
"""
)
"""Move the money if, and only if, this attempt's own row says committed."""

PIPELINED: tuple[LiteralString, ...] = (BEGIN, SELECT_RESULT, RECORD, MOVE, COMMIT)
"""The transfer as documented statements in one pipeline (``ENGINE_STATEMENTS=pipelined``)."""
