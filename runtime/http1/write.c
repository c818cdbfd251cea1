/*
 * write.c - HTTP/1.x serialisation of a response the core decided
 * (core/response.c): one reserve, then straight appends.
 */
#include "http1/write.h"

void dl_http1_write_response(dl_buf_t *o, const dl_req_t *r, const dl_resp_wire_t *w)
{
    const dl_resp_t *resp = w->resp;
    int status = w->status;
    dl_buf_reserve(o, 256 + resp->headers_len + (w->no_body || resp->has_file ? 0 : w->body_len));
    dl_buf_append_str(o, r->http_minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ");
    dl_buf_append_u64(o, (unsigned)status);
    dl_buf_append_char(o, ' ');
    dl_buf_append_str(o, dl_status_text(status));
    dl_buf_append(o, "\r\n", 2);
    dl_resp_wire_put_lines(w, o);
    if (w->chunked)
        dl_buf_append_str(o, "Transfer-Encoding: chunked\r\n");
    if (!w->keep)
        dl_buf_append_str(o, "Connection: close\r\n");
    else if (r->http_minor == 0)
        dl_buf_append_str(o, "Connection: keep-alive\r\n");
    if (resp->headers_len)
        dl_buf_append(o, resp->headers, resp->headers_len);
    dl_buf_append(o, "\r\n", 2);
    if (!w->no_body && !resp->has_file)
        dl_buf_append(o, w->body, w->body_len);
}
