"""The transfer engine: its SQL (:mod:`.sql`), one attempt (:mod:`.attempt`), the retry
loop (:mod:`.retry`) and the database's reachability (:mod:`.availability`)."""

from worker.engine.availability import Availability
from worker.engine.retry import RetryPolicy, TransferEngine

__all__ = ["Availability", "RetryPolicy", "TransferEngine"]
