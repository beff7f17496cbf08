import urllib.parse

import schemathesis

DRIVER = ("diesel", "r2d2", "sqlstate", "syntax error", "violates", "duplicate key",
          "lapin", "os error", "connection refused", "broken pipe", "pq:")

@schemathesis.check
def no_driver_text(ctx, response, case):
    text = response.text.lower()
    # What the request itself carried may be echoed back (e.g. "unknown sku \"r2d2\"").
    sent = urllib.parse.unquote(
        " ".join(str(x) for x in (case.path_parameters, case.query, case.body, case.headers))
    ).lower()
    for word in DRIVER:
        if word in text and word not in sent:
            raise AssertionError(f"driver text {word!r} in the body; sent: {sent[:300]}")
