"""Captions for a rebuild, one concern per module:

- :mod:`.formats`: reading caption tables, native RSICD / RSITMD / NWPU-Captions files and IR-aware files;
- :mod:`.store`: the disk-backed lookup an index record finds its captions in;
- :mod:`.policies`: which caption a row gets (``rc4`` default, ``paper``) and which IR-aware caption
  makes it ``iraware`` (``rc4`` default, ``strict``);
- :mod:`.rules`: the named cleaning rules the ``paper`` and ``strict`` policies apply;
- :mod:`.irfilter`: the authors' strict-v3 IR filter and the release's IR-aware statuses.
"""

from .formats import (  # noqa: F401
    NATIVE_READERS,
    CaptionEntry,
    CaptionFileError,
    IRAwareEntry,
    detect_format,
    read_caption_file,
    read_caption_table,
    read_iraware,
    read_karpathy_json,
    read_nwpu_captions,
)
from .irfilter import ACCEPTED_STATUSES, REMOVED_STATUSES, STRICT_V3, strict_v3_reasons  # noqa: F401
from .policies import (  # noqa: F401
    CAPTION_POLICIES,
    CHOICES,
    DEFAULT_CAPTION_POLICY,
    DEFAULT_IR_POLICY,
    FALLBACK_TEMPLATE,
    IR_POLICIES,
    CaptionDecision,
    CaptionPolicy,
    IRPolicy,
    decide,
    decide_ir,
    fallback_caption,
    pick,
)
from .rules import *  # noqa: F401,F403
from .rules import RULES, Rule, normalize, violations  # noqa: F401
from .store import CaptionStore  # noqa: F401
