"""Make SQLite's "database is locked" a deadlock that oslo.db retries.

Imported by every service of the test bed (uwsgi.ini: import = ...), never by
keystone-manage or glance-manage.

oslo.db starts each transaction with a deferred BEGIN. In WAL mode a
transaction that reads, then writes after another connection committed, gets
SQLITE_BUSY at once (the busy timeout cannot help: its snapshot is stale), and
Glance answered 500 to uploads and deletes while other uploads finished.
Glance's image_create, image_update and image_destroy already retry the whole
transaction on DBDeadlock (oslo.db wrap_db_retry, as for MySQL's deadlocks);
this filter gives them the SQLite case too.
"""

import os
import sys

from oslo_db import exception
from oslo_db.sqlalchemy import exc_filters
from sqlalchemy import exc as sqla_exc


@exc_filters.filters("sqlite", sqla_exc.OperationalError, r"^.*database is locked.*")
def _sqlite_locked_is_a_deadlock(operational_error, match, engine_name, is_disconnect):
    raise exception.DBDeadlock(operational_error)


# A line in uwsgi.log shows that the service loaded this filter.
print(f"osih_sqlite_retry: SQLite 'database is locked' is retried as DBDeadlock (pid {os.getpid()})",
      file=sys.stderr, flush=True)
