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
from sqlalchemy import event
from sqlalchemy import exc as sqla_exc
from sqlalchemy.engine import Engine


@exc_filters.filters("sqlite", sqla_exc.OperationalError, r"^.*database is locked.*")
def _sqlite_locked_is_a_deadlock(operational_error, match, engine_name, is_disconnect):
    raise exception.DBDeadlock(operational_error)


# Every transaction on SQLite starts with BEGIN IMMEDIATE: it takes the write
# lock at its start, so a second writer waits out the busy timeout (the URL's
# timeout=30) instead of failing when it upgrades a stale read. The filter above
# then only sees a wait longer than that. Glance's calls that oslo.db does not
# retry (image_tag_set_all after image_create, the location updates of a
# DELETE) answered 500 for work half done: an image created without its tags,
# a DELETE whose data went. oslo.db already switches pysqlite's own BEGIN off
# and emits a plain BEGIN in its "begin" listener unless `in_transaction` is
# set; this listener, on the Engine class, runs first and sets it.
@event.listens_for(Engine, "begin")
def _begin_immediate(connection):
    if connection.dialect.name == "sqlite" and "in_transaction" not in connection.info:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        connection.info["in_transaction"] = True


# A line in uwsgi.log shows that the service loaded this filter.
print(f"osih_sqlite_retry: SQLite transactions BEGIN IMMEDIATE; 'database is locked' is retried as DBDeadlock (pid {os.getpid()})",
      file=sys.stderr, flush=True)
