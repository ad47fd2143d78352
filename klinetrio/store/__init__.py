"""Everything that touches PostgreSQL.

``database`` is blocking psycopg code, run only in worker threads; ``writer`` is the Trio
component that batches candles and offloads the writes; ``embedded`` runs the PostgreSQL that
klinetrio uses when no database URL is configured.
"""
