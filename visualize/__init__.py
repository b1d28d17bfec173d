"""Diagrams of statewf machines, instances, histories and workflow runs."""
