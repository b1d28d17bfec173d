"""Diagrams of statewf machines, instances, histories and workflow runs (DOT, Mermaid, images).

The pipeline is pure up to the last step: extract a small frozen :class:`Graph`
from a definition, snapshot or log; write it as DOT or Mermaid text; render an
image with Graphviz only when asked (``Diagram.render``).
"""

from visualize.api import history_diagram, instance_diagram, machine_diagram
from visualize.diagram import Diagram
from visualize.errors import VisualizeError
from visualize.graph import Action, Cluster, Edge, Graph, Node
from visualize.run import run_diagram

__all__ = [
    "Action",
    "Cluster",
    "Diagram",
    "Edge",
    "Graph",
    "Node",
    "VisualizeError",
    "history_diagram",
    "instance_diagram",
    "machine_diagram",
    "run_diagram",
]
