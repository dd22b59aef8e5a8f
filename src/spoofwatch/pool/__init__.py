"""The inference pool: a Ray Serve application that scores batches of windows for many
ingest nodes (``spoofwatch pool``), and the scorer ingest nodes use to reach it
(``spoofwatch serve --scorer ray``). Ray is imported only when a pool is used."""
