"""Safe file serving (issue 17, item 3): hostile uploads (an HTML page with
<script> sent as text/html, an SVG with script, active types in odd case and
with parameters) come back as attachments, never inline with their own type;
the safe list (images but SVG, PDF, plain text) goes inline only when the app
asks; filenames with quotes, semicolons, CR/LF and non-ASCII are encoded per
RFC 6266 and RFC 8187 and cannot break the header; nosniff stays. Also
examples/devloop-api's GET /api/files/:id (a copy of the app)."""
import email
import os
import re
import shutil
import tempfile
import urllib.parse

import harness
from harness import Server

HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
       b"<script>alert(document.domain)</script></svg>")
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32

# Content-Disposition as RFC 6266 writes it, and nothing else: a quoted ASCII
# fallback without quotes, backslashes, controls or semicolons, then
# filename*=UTF-8'' with attr-chars and %XX only (RFC 8187 3.2.1)
DISPOSITION = re.compile(r"^(attachment|inline); filename=\"([\x20-\x7e]*)\""
                         r"(?:; filename\*=UTF-8''((?:[A-Za-z0-9!#$&+\-.^_`|~]|%[0-9A-F]{2})+))?$")

ACTIVE = ["text/html", "TEXT/HTML; charset=utf-8", "text/html;charset=UTF-8",
          "application/xhtml+xml", "image/svg+xml", "Image/SVG+XML", "text/xml",
          "application/xml", "text/javascript", "application/javascript",
          "application/x-javascript", "application/ecmascript", "text/css",
          "application/rss+xml", "multipart/x-mixed-replace; boundary=x", "message/rfc822",
          "text/x-component", "application/x-shockwave-flash", "text/vtt", "bogus",
          "text/html\t; x=y", 'application/pdf" ; x="text/html']


def multipart(filename, ctype, data, boundary="XyZ"):
    """A multipart body with one "file" part, filename given as raw bytes
    inside the quotes (backslash escapes are the caller's)."""
    head = (b'--' + boundary.encode() + b'\r\nContent-Disposition: form-data; name="file"; '
            b'filename="' + filename + b'"\r\nContent-Type: ' + ctype.encode() + b"\r\n\r\n")
    return head + data + b"\r\n--" + boundary.encode() + b"--\r\n"


def upload(srv, data, ctype, filename=b"f.bin", url="/files"):
    r = srv.request("POST", url, {"Content-Type": "multipart/form-data; boundary=XyZ"},
                    multipart(filename, ctype, data))
    assert r.status == 201, r
    j = r.json()
    return j["file"] if "file" in j else j


def check_disposition(value, kind, name):
    """The header parses strictly and both forms name the file."""
    assert value is not None, "no Content-Disposition"
    m = DISPOSITION.match(value)
    assert m, "Content-Disposition breaks RFC 6266: %r" % value
    assert m.group(1) == kind, (kind, value)
    fallback, star = m.group(2), m.group(3)
    assert not any(c in fallback for c in '"\\;%'), value
    if any(ord(c) > 126 for c in name):
        assert star, "a non-ASCII name needs filename*: %r" % value
    if star:
        assert urllib.parse.unquote(star, errors="strict") == name, (star, name)
    # and a MIME parser (RFC 2231, the origin of RFC 8187) reads each form
    # (it takes the first filename where a browser prefers filename*)
    for part, want in (('filename="%s"' % fallback, fallback),
                       ("filename*=UTF-8''%s" % star, name)):
        if want is name and not star:
            continue
        msg = email.message_from_string("Content-Disposition: %s; %s\n\n" % (kind, part))
        assert msg.get_content_disposition() == kind, value
        assert msg.get_filename() == want, (msg.get_filename(), want, value)
    return fallback


def served(srv, path, id_):
    r = srv.get(path + id_)
    assert r.status == 200, r
    assert r.header("x-content-type-options") == "nosniff", r
    return r


def test_html_upload_is_an_attachment(srv):
    f = upload(srv, HTML, "text/html", b"page.html")
    for path in ("/files/", "/inline/"):
        r = served(srv, path, f["id"])
        assert r.body == HTML
        ctype = r.header("content-type")
        # never inline with its own type: octet-stream, in a sandbox, as a download
        assert ctype == "application/octet-stream", (path, ctype)
        assert r.header("content-security-policy") == "sandbox", r
        check_disposition(r.header("content-disposition"), "attachment", "page.html")


def test_svg_with_script_is_an_attachment(srv):
    f = upload(srv, SVG, "image/svg+xml", b"logo.svg")
    for path in ("/files/", "/inline/"):
        r = served(srv, path, f["id"])
        assert r.body == SVG
        assert r.header("content-type") == "application/octet-stream", r
        assert r.header("content-security-policy") == "sandbox", r
        check_disposition(r.header("content-disposition"), "attachment", "logo.svg")


def test_active_types_in_any_spelling(srv):
    for ct in ACTIVE:
        f = upload(srv, HTML, ct, b"x.bin")
        for path in ("/files/", "/inline/"):
            r = served(srv, path, f["id"])
            got = r.header("content-type")
            assert got == "application/octet-stream", (ct, path, got)
            assert r.header("content-disposition").startswith("attachment;"), (ct, r)
            assert r.header("content-security-policy") == "sandbox", (ct, r)


def test_app_cannot_opt_active_types_inline(srv):
    f = upload(srv, HTML, "text/html", b"p.html")
    r = srv.get("/html-inline/" + f["id"])
    assert r.status == 500 and b"text/html" not in r.body, r  # the app's mistake, not served


def test_safe_list_inline_only_when_asked(srv):
    cases = [(PNG, "image/png", b"a.png", "image/png"),
             (b"%PDF-1.4\n%%EOF\n", "application/pdf", b"a.pdf", "application/pdf"),
             (b"just text <script>", "text/plain; charset=utf-8", b"a.txt",
              "text/plain; charset=utf-8"),
             (PNG, "IMAGE/PNG", b"b.png", "image/png")]
    for data, ct, name, want in cases:
        f = upload(srv, data, ct, name)
        r = served(srv, "/files/", f["id"])
        assert r.header("content-type") == want, (ct, r)
        check_disposition(r.header("content-disposition"), "attachment", name.decode())
        r = served(srv, "/inline/", f["id"])
        assert r.body == data and r.header("content-type") == want, (ct, r)
        check_disposition(r.header("content-disposition"), "inline", name.decode())
        if want != "application/pdf":  # a sandboxed PDF does not render in Chrome
            assert r.header("content-security-policy") == "sandbox", r
        r = served(srv, "/png-inline/", f["id"])
        kind = "inline" if want == "image/png" else "attachment"
        check_disposition(r.header("content-disposition"), kind, name.decode())
    # kept with their own type, as attachments: inert types
    for ct in ("application/zip", "application/x-test", "video/mp4", "image/webp"):
        f = upload(srv, b"data", ct)
        r = served(srv, "/files/", f["id"])
        assert r.header("content-type") == ct and \
            r.header("content-disposition").startswith("attachment;"), (ct, r)


def test_hostile_upload_filename(srv):
    # quotes (escaped in the multipart header), semicolons, non-ASCII, a
    # right-to-left override that would show "...lmth.exe" as "...exe.html"
    raw = b'ev\\"il\\"; filename=x.exe; r\xc3\xa9sum\xc3\xa9 \xe2\x80\xaelmth.exe'
    f = upload(srv, HTML, "text/html", raw)
    name = f["filename"]
    assert '"' not in name and "\u202e" not in name and "r\u00e9sum\u00e9" in name, name
    assert ";" in name, name  # kept: the header encoding makes it harmless
    for path in ("/files/", "/inline/"):
        r = served(srv, path, f["id"])
        assert r.header("content-type") == "application/octet-stream", r
        fb = check_disposition(r.header("content-disposition"), "attachment", name)
        assert fb.isascii() and fb.endswith(".exe"), fb
        assert len(r.header_all("content-disposition")) == 1, r


def test_hostile_names_through_the_encoder(srv):
    names = ['a"b;c\r\nSet-Cookie: sid=1; x="y', "caf\u00e9 \u65e5\u672c.txt",
             "..\\..\\etc\\passwd", "evil\x1b[31m.txt", "\u202egnp.exe", "100%.txt", "",
             "tab\there.txt", "x" * 400 + ".pdf", "semi;colon,comma.txt"]
    for n in names:
        q = urllib.parse.quote(n, safe="")
        for kind in ("attachment", "inline"):
            r = srv.get("/disposition?kind=%s&name=%s" % (kind, q))
            assert r.status == 200, (n, r)
            assert r.header("set-cookie") is None, r
            value = r.header("content-disposition")
            m = DISPOSITION.match(value or "")
            assert m and m.group(1) == kind, (n, value)
            shown = urllib.parse.unquote(m.group(3)) if m.group(3) else m.group(2)
            assert not any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in shown), value
            assert "\u202e" not in shown and "/" not in shown and "\\" not in shown, value
            assert len(shown.encode()) <= 200, value
            check_disposition(value, kind, shown)
    r = srv.get("/disposition?name=" + urllib.parse.quote("caf\u00e9.txt"))
    check_disposition(r.header("content-disposition"), "attachment", "caf\u00e9.txt")
    # a repeated key arrives as a table: refused, never "table: 0x..." in a header
    r = srv.get("/disposition?name=a&name=b")
    assert r.status == 500 and "table" not in (r.header("content-disposition") or ""), r


def test_devloop_api_example(srv):
    """examples/devloop-api's upload pair, the one the issue found."""
    work = tempfile.mkdtemp(prefix="devloop-secfiles-")
    app = os.path.join(work, "app")
    shutil.copytree(os.path.join(harness.SRC, "examples", "devloop-api"), app,
                    ignore=shutil.ignore_patterns("data", "logs"))
    ex = Server(app)
    try:
        f = upload(ex, HTML, "text/html", b"x.html", url="/api/files")
        r = served(ex, "/api/files/", f["id"])
        assert r.body == HTML and r.header("content-type") == "application/octet-stream", r
        check_disposition(r.header("content-disposition"), "attachment", "x.html")
        f = upload(ex, SVG, "image/svg+xml", b"x.svg", url="/api/files")
        r = served(ex, "/api/files/", f["id"])
        assert r.header("content-type") == "application/octet-stream", r
        assert r.header("content-disposition").startswith("attachment;"), r
    finally:
        ex.stop()
        shutil.rmtree(work, ignore_errors=True)


# test_app_cannot_opt_active_types_inline makes the handler raise on purpose
ALLOWED_ERRORS = ["cannot be served inline", "name must be a string, not a table"]

if __name__ == "__main__":
    harness.main(globals(), app="secfiles")
