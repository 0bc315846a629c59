"""The authors' release (rc4-20260727 and later): record schemas, known releases and their official checks.

Everything here is a fact of the release, kept apart from our own policies so a reader can tell
which rule is the authors' and which is ours.
"""

from .known import RC4, RELEASES, IndexIdentity, Release, get_release, identify_index  # noqa: F401
from .schemas import INTERNAL_SCHEMA, PUBLIC_SCHEMA, RECORD_SCHEMAS  # noqa: F401
