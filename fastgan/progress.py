"""Progress bars on stderr that print their final line once.

tqdm's ``close()`` redraws the bar; when the last ``update()`` had drawn it already, a log or a pipe (where
every redraw is a line of its own) showed the final line twice. ``Bar`` leaves the last draw to ``close()``.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


class Bar(tqdm):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("dynamic_ncols", True)
        super().__init__(*args, **kwargs)

    def update(self, n: float = 1):
        if self.total is not None and self.n + n >= self.total and not self.disable:
            self.n += n  # complete: close() draws it, once
            return None
        return super().update(n)
