/* store_internal.h -- store internals shared with the store's own tests.
 *
 * Not for other modules: nothing outside store/ and tests/unit/test_store.c
 * may include this header. */
#ifndef RR_STORE_INTERNAL_H
#define RR_STORE_INTERNAL_H

#include <sqlite3.h>

#include "store/store.h"

/* The connection behind s, borrowed for as long as s is open. For tests and
 * diagnostics only (reading pragmas); never step statements on it while a
 * store call is running, and never pass it to another thread. */
sqlite3 *store__db(struct store *s);

/* The SQL of the migration step that brings the schema to `version` (1-based),
 * exactly as store_open runs it; NULL when there is no such step. Lets tests
 * build a database as an older release left it. Static storage. */
const char *store__migration_sql(int version);

#endif
