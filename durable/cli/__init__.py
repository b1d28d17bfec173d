"""``statewf`` CLI plugins: ``statewf runs ...``, ``approve``, ``reject`` (a client's
operations), ``statewf tasks ...`` (open human tasks) and ``statewf worker`` /
``workers`` (running and listing workers).

Rule: the top layer: commands call the public faces (:class:`~durable.Client`,
:class:`~durable.Worker`) and nothing imports this package.
"""
