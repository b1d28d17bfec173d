"""The statechart core: a compiled chart and the W3C SCXML algorithm that runs it.

Rule of this folder: it is pure. Nothing here touches a database, a clock, a random
source or the ``transitions`` library; :mod:`statewf.chart.model` holds plain data,
:mod:`statewf.chart.build` compiles a :class:`statewf.State` tree into it, and
:mod:`statewf.chart.algorithm` is appendix D of the SCXML recommendation over it.
"""
