"""Shared by the tutorial pages (run by markdown-exec when the site is built)."""

import base64
import io


def figure(fig, alt: str = "figure") -> str:
    """A matplotlib figure as an inline PNG ``<img>`` (the page embeds it; no image file is
    committed). Print it from a block with ``html="true"``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'
