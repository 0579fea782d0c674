"""The site's files: safe names and a folder that refuses any path outside the report.

Every file name that derives from the store (methods, groups) is a sanitised slug plus a short
hash of the original string (`safe_name`), and every write is checked to land inside the output
folder (`SiteFolder`), so a method named ``../../evil`` cannot write outside it. The pages
(`cmrbench.reports.pages`) write only through a `SiteFolder`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from cmrbench.errors import CmrbenchError

SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SUBFOLDERS = ("plots", "overlays", "data", "static")


class SitePathError(CmrbenchError, ValueError):
    """A site file name that is not a plain name inside the output folder."""


def safe_name(kind: str, key: str | tuple[str, ...], suffix: str) -> str:
    """``<kind>-<slug>-<hash8><suffix>``: a file or anchor name unique per key.

    ``key`` is a name or a tuple of key values; the hash is over the tuple's canonical JSON,
    so keys whose joined titles happen to read alike (``("a · b", "c")``, ``("a", "b · c")``)
    still get different names.
    """
    parts = (key,) if isinstance(key, str) else tuple(str(p) for p in key)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", " ".join(parts)).strip("-").lower()[:40] or "x"
    canonical = json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:8]
    return f"{kind}-{slug}-{digest}{suffix}"


class SiteFolder:
    """Writes files under one root, refusing any path that is not ``[subfolder/]name``.

    The root is the staging folder of `publish.publish`, so a page can never land outside
    the report, and the report never writes over a user's file.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, relative: str) -> Path:
        """The absolute path of ``relative`` after checking it is a safe site path."""
        parts = relative.split("/")
        if not (
            len(parts) == 1 or (len(parts) == 2 and parts[0] in SUBFOLDERS)
        ) or not SAFE_FILE.match(parts[-1]):
            raise SitePathError(
                f"refusing site path {relative!r}: expected a plain file name, "
                f"optionally under one of {', '.join(SUBFOLDERS)}"
            )
        target = (self.root / relative).resolve()
        if self.root not in target.parents:
            raise SitePathError(
                f"refusing site path {relative!r}: it resolves to {target}, outside {self.root}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_text(self, relative: str, text: str) -> Path:
        target = self.path(relative)
        target.write_text(text, encoding="utf-8")
        return target

    def write_bytes(self, relative: str, data: bytes) -> Path:
        target = self.path(relative)
        target.write_bytes(data)
        return target
