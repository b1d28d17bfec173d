"""The one error the diagram package raises on purpose."""

from __future__ import annotations

from statewf.errors import StatewfError

#: What to tell a user whose machine cannot render images.
INSTALL_HINT = (
    "install the Graphviz 'dot' program (Debian/Ubuntu: apt-get install graphviz; "
    "macOS: brew install graphviz) and the Python package (pip install statewf[diagrams]); "
    "DOT and Mermaid text (.source, .mermaid, --format dot|mermaid) need neither"
)


class VisualizeError(StatewfError):
    """A diagram could not be built or rendered; the message says how to fix it."""
