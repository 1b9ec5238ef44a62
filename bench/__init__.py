"""``make bench``: throughput, latency and retry behaviour, side by side with what a
user would compare them against, measured in one run on one embedded PostgreSQL.

One module per measurement:

- :mod:`bench.engine` and :mod:`bench.pgbench`: the transfer engine without SQS against
  ``pgbench -b tpcb-like -M prepared``, same server, same client counts, on loopback
  and through a latency proxy in its own process (:mod:`bench.proxy`);
- :mod:`bench.round_trips`: round trips per transfer, through a latency-injecting proxy;
- :mod:`bench.pipeline`: worker + producer through moto against moto's own throughput
  for the same send/receive/delete pattern with no work (:mod:`bench.sqs_raw`);
- :mod:`bench.contention`: the hot-account sweep, retries on and off;
- :mod:`bench.footprint`: the Lambda handler's cold import (worker RSS is sampled
  during the pipeline runs by :mod:`bench.processes`).

:mod:`bench.report` turns the numbers into ``bench/results.json`` and a table;
:mod:`bench.machine` and :mod:`bench.cpu` record where they came from and who used the
CPU; :mod:`bench.profile` records the py-spy profiles behind the explanations. Not part
of ``make test``: timings depend on the machine, so the harness reports medians over
repeats and ratios measured in the same run, with the machine they came from.
"""
