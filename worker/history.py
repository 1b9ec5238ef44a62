"""The account-history query: the reader of the two history indexes in :mod:`worker.schema`.

It lives in ``worker`` (not ``producer``) because ``python -m worker explain`` shows its
plan next to the transfer's statements; ``producer history`` runs it.
"""

from __future__ import annotations

from typing import LiteralString

from worker.engine import RESULT_COLUMNS

HISTORY: LiteralString = (
    # Each branch is a backward scan of one history index, (payer_id, completed_at)
    # or (payee_id, completed_at), stopping after %(limit)s rows; the outer query merges
    # at most 2 x limit rows. An OR over both columns would scan instead.
    "(SELECT " + RESULT_COLUMNS + " FROM transfer_results"
    " WHERE payer_id = %(account_id)s"
    " ORDER BY completed_at DESC LIMIT %(limit)s)"
    " UNION ALL"
    # A same_account rejection names the account on both sides: list it once.
    " (SELECT " + RESULT_COLUMNS + " FROM transfer_results"
    " WHERE payee_id = %(account_id)s AND payer_id <> %(account_id)s"
    " ORDER BY completed_at DESC LIMIT %(limit)s)"
    " ORDER BY completed_at DESC, transfer_id LIMIT %(limit)s"
)
"""The latest ``%(limit)s`` results paid by or to ``%(account_id)s``, newest first."""
