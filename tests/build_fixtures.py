"""The source-tree factory now ships with the package (``fusionrs demo --sources``): re-exported for the tests."""

from fusionrs_hf.testing.sources import (  # noqa: F401
    NATIVE_SIZE,
    Expect,
    Fixture,
    build_options,
    decoded,
    internal_record,
    iraware_record,
    make_fixture,
    png_bytes,
    public_record,
    tiff_bytes,
    write_json,
    write_jsonl,
)
