"""The cloud coordinator: enrolls sites, holds their control streams, and serves operators.

Layout by area: ``sites`` (enrollment, identity, revocation), ``control`` (agent streams),
each with plain logic, a store and a thin servicer; ``app`` assembles them into a server.
"""
