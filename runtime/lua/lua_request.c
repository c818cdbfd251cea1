/*
 * lua_request.c - the request as a handler sees it: a Lua table with the
 * cheap fields set at once (method, path, params, the decoded body or an
 * upload's fields and files) and the rest (id, query, headers, raw_body, the
 * client's ip, scheme and host, ...) built on first use by its __index. The
 * table is cut off the C request when the request ends.
 */
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/codec_json.h"
#include "common/codec_msgpack.h"
#include "core/forwarded.h"
#include "core/upload.h"
#include "lua/lua_state.h"
#include "lua/lua_vm_internal.h"

static char req_key; /* request table: lightuserdata(&req_key) -> lightuserdata(req) */

/* ================================================================== body */

static int has_prefix_ci(const char *s, size_t len, const char *p)
{
    size_t pl = strlen(p);
    return len >= pl && dl_strncasecmp_eq(s, pl, p, pl);
}

/* What push_form_kv() fills: the table on top of L, and the values it may
 * still add (SIZE_MAX: no limit). */
typedef struct {
    lua_State *L;
    size_t left;
} form_t;

static int push_form_kv(const char *k, size_t klen, const char *v, size_t vlen, void *arg);

/* An upload's fields (as a form body) and req.files. Their bytes are capped
 * (DL_UPLOAD_MAX_FIELDS_BYTES) and each costs a part header, so they need no
 * element count. */
static void push_upload(dl_req_t *req, lua_State *co)
{
    int nfields;
    const dl_buf_t *fb = dl_upload_fields(req->upload, &nfields);
    lua_newtable(co);
    form_t form = {co, SIZE_MAX};
    const char *p = fb->data;
    for (int i = 0; i < nfields; i++) {
        uint32_t kl, vl;
        memcpy(&kl, p, 4);
        const char *k = p + 4;
        memcpy(&vl, k + kl, 4);
        const char *v = k + kl + 4;
        push_form_kv(k, kl, v, vl, &form);
        p = v + vl;
    }
    lua_setfield(co, -2, "body");
    dl_upload_file_t *files;
    int n = dl_upload_files(req->upload, &files);
    lua_createtable(co, n, 0);
    for (int i = 0; i < n; i++) {
        dl_upload_file_t *f = &files[i];
        lua_createtable(co, 0, 6);
        lua_pushstring(co, f->field);
        lua_setfield(co, -2, "field");
        lua_pushstring(co, f->filename);
        lua_setfield(co, -2, "filename");
        lua_pushstring(co, f->content_type);
        lua_setfield(co, -2, "content_type");
        lua_pushnumber(co, (lua_Number)f->size);
        lua_setfield(co, -2, "size");
        lua_pushstring(co, f->sha256);
        lua_setfield(co, -2, "sha256");
        lua_pushstring(co, f->path);
        lua_setfield(co, -2, "path");
        lua_rawseti(co, -2, i + 1);
    }
    lua_setfield(co, -2, "files");
}

/* Decodes the body by Content-Type onto the stack of co. Returns 0, or with
 * nothing pushed DL_ETOOBIG (more than max_elements values: the bytes were
 * under the limit but not what they would cost decoded, about 72 bytes per
 * empty table), DL_ECODEC (malformed) or DL_ENOMEM, with a message in err. */
static int push_body(dl_req_t *req, lua_State *co, size_t max_elements, char *err, size_t errlen)
{
    if (req->body.len == 0) {
        lua_pushnil(co);
        return 0;
    }
    dl_codec_limits_t lim = {max_elements, DL_CODEC_BODY_DEPTH};
    size_t ctlen = 0;
    const char *ct = dl_req_header(req, "content-type", &ctlen);
    if (ct && (has_prefix_ci(ct, ctlen, "application/json") ||
               (ctlen > 5 && memmem(ct, ctlen, "+json", 5))))
        return dl_json_decode_limited(co, req->body.data, req->body.len, &lim, err, errlen);
    if (ct && (has_prefix_ci(ct, ctlen, "application/msgpack") ||
               has_prefix_ci(ct, ctlen, "application/x-msgpack") ||
               has_prefix_ci(ct, ctlen, "application/vnd.msgpack")))
        return dl_msgpack_decode_limited(co, req->body.data, req->body.len, &lim, err, errlen);
    if (ct && has_prefix_ci(ct, ctlen, "application/x-www-form-urlencoded")) {
        /* the table is one value, like a decoded map */
        form_t form = {co, max_elements > 0 ? max_elements - 1 : SIZE_MAX};
        lua_newtable(co);
        int rc = dl_parse_query(req->body.data, req->body.len, 1, push_form_kv, &form);
        if (rc != 0) {
            lua_pop(co, 1);
            if (rc == DL_ETOOBIG)
                snprintf(err, errlen, "more than %zu elements", max_elements);
            else
                snprintf(err, errlen, "%s", dl_strerror(rc));
        }
        return rc;
    }
    lua_pushlstring(co, req->body.data, req->body.len);
    return 0;
}

/* ========================================================= the table */

int dl_vm_push_request(dl_vm_t *vm, dl_req_t *req, lua_State *co, char *msg, size_t msglen)
{
    /* the request table: eager cheap fields, lazy query/headers via __index */
    lua_createtable(co, 0, 8);
    lua_pushlightuserdata(co, &req_key);
    lua_pushlightuserdata(co, req);
    lua_rawset(co, -3);
    lua_pushstring(co, req->method_name);
    lua_setfield(co, -2, "method");
    lua_pushlstring(co, req->head.data, req->path_len);
    lua_setfield(co, -2, "path");
    /* params only when the route has some; __index makes an empty one on demand */
    if (req->match.n_params > 0)
        lua_createtable(co, 0, req->match.n_params);
    for (int i = 0; i < req->match.n_params; i++) {
        dl_route_param_t *p = &req->match.params[i];
        lua_pushlstring(co, p->name, p->name_len);
        char *v = dl_strndup(p->value, p->value_len);
        if (v) {
            size_t vl = dl_url_decode(v, p->value_len, 0);
            lua_pushlstring(co, v, vl);
            dl_free(v);
        } else {
            lua_pushlstring(co, p->value, p->value_len);
        }
        lua_rawset(co, -3);
    }
    if (req->match.n_params > 0)
        lua_setfield(co, -2, "params");
    if (req->upload) {
        push_upload(req, co);
    } else {
        char err[200];
        int rc = push_body(req, co, vm->host->cfg->max_body_elements, err, sizeof(err));
        if (rc != 0) {
            int st = 400;
            const char *what = "malformed request body: ";
            if (rc == DL_ETOOBIG) {
                st = 413;
                what = "request body has ";
            } else if (rc == DL_ENOMEM) {
                st = 503;
                what = "request body: ";
            }
            snprintf(msg, msglen, "%s%s", what, err);
            return st;
        }
        lua_setfield(co, -2, "body");
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, vm->req_mt_ref);
    lua_setmetatable(co, -2);
    lua_pushvalue(co, -1);
    req->table_ref = luaL_ref(co, LUA_REGISTRYINDEX);
    return 0;
}

void dl_vm_release_request(dl_vm_t *vm, dl_req_t *req)
{
    if (req->table_ref == LUA_NOREF || req->table_ref == 0)
        return;
    lua_State *L = vm->L;
    /* cut the table off the C request: a handler that kept it sees nil fields */
    lua_rawgeti(L, LUA_REGISTRYINDEX, req->table_ref);
    lua_pushlightuserdata(L, &req_key);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, req->table_ref);
    req->table_ref = LUA_NOREF;
}

/* ======================================================= lazy req fields */

static int push_form_kv(const char *k, size_t klen, const char *v, size_t vlen, void *arg)
{
    form_t *form = arg;
    lua_State *L = form->L;
    if (form->left == 0)
        return DL_ETOOBIG;
    form->left--;
    lua_pushlstring(L, k, klen);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    int t = lua_type(L, -1);
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushlstring(L, v, vlen);
        lua_rawset(L, -3);
    } else if (t == LUA_TTABLE) {
        /* a third or later value for this key */
        lua_pushlstring(L, v, vlen);
        lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
        lua_pop(L, 2);
    } else {
        /* a repeated key becomes an array of its values */
        lua_createtable(L, 2, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
        lua_pushlstring(L, v, vlen);
        lua_rawseti(L, -2, 2);
        lua_rawset(L, -3);
    }
    return 0;
}

static int headers_index(lua_State *L)
{
    /* case-insensitive look-up: keys are stored lower-case */
    size_t n;
    const char *k = lua_tolstring(L, 2, &n);
    if (k == NULL || n > 256)
        return 0;
    char low[257];
    for (size_t i = 0; i < n; i++)
        low[i] = (char)dl_tolower((unsigned char)k[i]);
    lua_pushlstring(L, low, n);
    lua_rawget(L, 1);
    return 1;
}

static void push_headers(lua_State *L, dl_req_t *req)
{
    lua_createtable(L, 0, req->n_headers);
    char low[256];
    for (int i = 0; i < req->n_headers; i++) {
        dl_header_t *h = &req->headers[i];
        const char *name = req->head.data + h->name_off;
        size_t nl = DL_MIN(h->name_len, sizeof(low));
        for (size_t j = 0; j < nl; j++)
            low[j] = (char)dl_tolower((unsigned char)name[j]);
        lua_pushlstring(L, low, nl);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, req->head.data + h->value_off, h->value_len);
        } else {
            /* repeated headers join with ", " (RFC 9110 5.3), Cookie's crumbs
             * (HTTP/2 splits it, RFC 9113 8.2.3) with "; " on every protocol */
            if (nl == 6 && memcmp(low, "cookie", 6) == 0)
                lua_pushliteral(L, "; ");
            else
                lua_pushliteral(L, ", ");
            lua_pushlstring(L, req->head.data + h->value_off, h->value_len);
            lua_concat(L, 3);
        }
        lua_rawset(L, -3);
    }
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, headers_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
}

/* __index of request tables: id, query, headers, raw_body, ... built on
 * first use. */
int dl__req_index(lua_State *L)
{
    lua_pushlightuserdata(L, &req_key);
    lua_rawget(L, 1);
    dl_req_t *req = lua_touserdata(L, -1);
    lua_pop(L, 1);
    const char *k = lua_tostring(L, 2);
    if (req == NULL || k == NULL)
        return 0;
    if (strcmp(k, "query") == 0) {
        /* the target's length is capped (max_uri), so its pairs need no count */
        form_t form = {L, SIZE_MAX};
        lua_newtable(L);
        if (req->url_len > req->path_len + 1)
            dl_parse_query(req->head.data + req->path_len + 1, req->url_len - req->path_len - 1,
                           0, push_form_kv, &form);
    } else if (strcmp(k, "headers") == 0) {
        push_headers(L, req);
    } else if (strcmp(k, "params") == 0) {
        lua_newtable(L);
    } else if (strcmp(k, "id") == 0) {
        lua_pushstring(L, req->id); /* a new string each request: made when asked for */
    } else if (strcmp(k, "raw_body") == 0) {
        lua_pushlstring(L, req->body.data ? req->body.data : "", req->body.len);
    } else if (strcmp(k, "target") == 0) {
        lua_pushlstring(L, req->head.data, req->url_len);
    } else if (strcmp(k, "http_version") == 0) {
        lua_pushstring(L, req->http_major == 2 ? "2" : req->http_minor == 0 ? "1.0" : "1.1");
    } else if (strcmp(k, "route") == 0) {
        lua_pushstring(L, req->route ? req->route->pattern : "");
    } else if (strcmp(k, "ip") == 0) {
        lua_pushstring(L, dl_client_get(req)->ip);
    } else if (strcmp(k, "scheme") == 0) {
        lua_pushstring(L, dl_client_get(req)->https ? "https" : "http");
    } else if (strcmp(k, "host") == 0) {
        /* host[:port] as the client named it, lower-cased; nil when none
         * (HTTP/1.0 without Host) */
        const dl_client_t *cl = dl_client_get(req);
        if (cl->host_len == 0)
            return 0;
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (uint32_t i = 0; i < cl->host_len; i++)
            luaL_addchar(&b, (char)dl_tolower((unsigned char)req->head.data[cl->host_off + i]));
        luaL_pushresult(&b);
    } else {
        return 0;
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1); /* cached for the next access */
    return 1;
}

/* core._header(req, name): one request header's value (name lower-case;
 * repeated ones joined with ", "), or nil, without building req.headers: a
 * hook that reads one field on every request (CORS reads Origin) would
 * otherwise pay for the whole table. */
int dl__req_header(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t nl;
    const char *name = luaL_checklstring(L, 2, &nl);
    lua_pushlightuserdata(L, &req_key);
    lua_rawget(L, 1);
    dl_req_t *req = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (req == NULL)
        return 0;
    const char *first = NULL;
    size_t first_len = 0;
    int found = 0;
    /* the same fields and joins as req.headers (push_headers) */
    int cookie = nl == 6 && dl_strncasecmp_eq(name, nl, "cookie", 6);
    for (int i = 0; i < req->n_headers; i++) {
        const dl_header_t *h = &req->headers[i];
        if (!dl_strncasecmp_eq(req->head.data + h->name_off, h->name_len, name, nl))
            continue;
        if (found == 0) {
            first = req->head.data + h->value_off;
            first_len = h->value_len;
        } else {
            if (found == 1)
                lua_pushlstring(L, first, first_len);
            if (cookie)
                lua_pushliteral(L, "; ");
            else
                lua_pushliteral(L, ", ");
            lua_pushlstring(L, req->head.data + h->value_off, h->value_len);
            lua_concat(L, 3);
        }
        found++;
    }
    if (found == 0)
        return 0;
    if (found == 1)
        lua_pushlstring(L, first, first_len);
    return 1;
}

dl_req_t *dl_lua_req_of(lua_State *L, int idx)
{
    if (!lua_istable(L, idx))
        return NULL;
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    lua_pushlightuserdata(L, &req_key);
    lua_rawget(L, idx);
    dl_req_t *req = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return req;
}
