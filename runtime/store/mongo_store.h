/*
 * mongo_store.h - the MongoDB backend of the document store (store.h), on
 * mongo-c-driver 1.23 with a pool of clients. Every operation blocks and is
 * thread-safe; run it in uv_queue_work.
 */
#ifndef DL_MONGO_STORE_H
#define DL_MONGO_STORE_H

#include <stddef.h>

#include "store/store.h"

#define DL_MONGO_DEFAULT_URI "mongodb://127.0.0.1:27017/devloop"
#define DL_MONGO_DEFAULT_DB "devloop"
#define DL_MONGO_DEFAULT_POOL_SIZE 10
#define DL_MONGO_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DL_MONGO_DEFAULT_SOCKET_TIMEOUT_MS 45000
#define DL_MONGO_DEFAULT_SELECT_TIMEOUT_MS 5000

/**
 * Opens a store on a MongoDB deployment. uri NULL or "": MONGO_URI, else
 * DL_MONGO_DEFAULT_URI; the database is the URI's, else "devloop".
 * pool_size <= 0: MONGO_POOL_SIZE, else the URI's maxPoolSize, else 10.
 * connectTimeoutMS, socketTimeoutMS and serverSelectionTimeoutMS default to
 * 5000, 45000 and 5000 unless the URI sets them. Nothing is contacted here:
 * an unreachable server shows in the first operation. Returns NULL with a
 * message in err on a bad URI. Close with s->ops->close(s).
 */
dl_store_t *dl_store_open_mongo(const char *uri, int pool_size, char *err, size_t errlen);

/** Parses uri as dl_store_open_mongo() does, connecting nothing: 0, or
 * DL_EINVAL with the message it would give in err. */
int dl_mongo_uri_check(const char *uri, char *err, size_t errlen);

/* The conversions the operations are built from, and their test hooks: mongo/mongo_int.h. */

#endif
