"""Log records are scrubbed when they are made, whoever logs them: a user's ``logging.basicConfig(level=DEBUG)``
prints what fsspec or huggingface_hub log about URLs with credentials in them."""

from __future__ import annotations

import logging
import subprocess
import sys


def test_a_third_party_record_is_scrubbed_at_creation():
    import fusionrs_hf  # noqa: F401 - installs the factory

    rec = logging.getLogger("fsspec.http").makeRecord(
        "fsspec.http", logging.DEBUG, __file__, 1, "GET %s", ("http://alice:HTTPPASS42@h/x",), None)
    assert rec.getMessage() == "GET http://***@h/x"


def test_debug_logging_of_a_library_under_us_prints_no_password():
    code = (
        "import logging, fusionrs_hf\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        "logging.getLogger('fsspec.http').debug('GET %s', 'http://alice:HTTPPASS42@127.0.0.1:9/x')\n"
        "try:\n"
        "    raise OSError('cannot open https://bob:PW77secret@host/y')\n"
        "except OSError:\n"
        "    logging.getLogger('huggingface_hub').exception('failed')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HTTPPASS42" not in out.stderr and "PW77secret" not in out.stderr
    assert "GET http://***@127.0.0.1:9/x" in out.stderr and "https://***@host/y" in out.stderr


def test_a_record_without_secrets_is_left_as_it_was_and_prose_is_not_masked():
    import fusionrs_hf  # noqa: F401
    from fusionrs_hf.secrets import scrub

    factory = logging.getLogRecordFactory()
    payload = {"event": "step", "n": 3}
    rec = factory("x", logging.INFO, __file__, 1, payload, None, None)
    assert rec.msg is payload and rec.args is None  # structured logging keeps its dict
    rec = factory("x", logging.INFO, __file__, 1, "loaded %d rows", (5,), None)
    assert rec.msg == "loaded %d rows" and rec.args == (5,)  # the template stays for grouping tools
    for prose in ("Consider installing hf_transfer", "Basic preprocessing finished", "the bearer of this message"):
        assert scrub(prose) == prose
    assert scrub("Authorization: Basic dXNlcjpwYXNz") == "Authorization: Basic ***"
    assert scrub("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x") == "Authorization: Bearer ***"
    assert scrub("token hf_" + "a" * 34) == "token hf_***"


def test_a_bad_format_string_does_not_print_its_args():
    code = (
        "import logging, fusionrs_hf\n"
        "from fusionrs_hf.secrets import register_secret\n"
        "register_secret('s3cr3tPassw0rd')\n"
        "logging.basicConfig()\n"
        "logging.getLogger('x').warning('connecting with %d', 's3cr3tPassw0rd')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "s3cr3tPassw0rd" not in out.stderr and "connecting with %d" in out.stderr, out.stderr
