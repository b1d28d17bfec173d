"""Code-first durable workflows compiled to the statewf transition log."""
