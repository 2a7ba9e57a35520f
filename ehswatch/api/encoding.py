"""`encode_json`: the API's JSON for answers built by hand (cached bytes, streamed rows).

msgspec's encoder: the same JSON as `json.dumps` for what the API answers (strings,
numbers, lists, dicts, None), at C speed; a float that is not finite is written as
``null``, never as the invalid ``NaN``.
"""

from __future__ import annotations

import msgspec

encode_json = msgspec.json.Encoder().encode
