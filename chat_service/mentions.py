"""``@username`` mentions in chat messages (PROTOCOL.md section 4: a mention notifies that user).

A mention is ``@`` followed by a whole username (``[A-Za-z0-9_]{3,32}``, the registration rule
of PROTOCOL.md section 6) that is not glued to other word characters: ``mail@example`` or
``@` followed by 33 word characters are not mentions. Usernames are unique case-insensitively,
so mentions are reported in lowercase. Whether a mentioned user exists is notify_service's
question (it consumes ``events.chat.message``).
"""

from __future__ import annotations

import re
from typing import Final

MENTION_RE: Final = re.compile(r"(?<![A-Za-z0-9_@])@([A-Za-z0-9_]{3,32})(?![A-Za-z0-9_])")


def extract_mentions(text: str, *, sender: str | None = None) -> list[str]:
    """Lowercase usernames mentioned in ``text``, unique, in order of first appearance.

    Args:
        text: the message text.
        sender: the author's username; a self-mention is not reported.

    Returns:
        e.g. ``["bob", "carol"]`` for ``"hi @Bob and @carol, @BOB"``.
    """
    own = sender.lower() if sender else None
    seen: dict[str, None] = {}
    for match in MENTION_RE.finditer(text):
        name = match.group(1).lower()
        if name != own:
            seen.setdefault(name, None)
    return list(seen)
