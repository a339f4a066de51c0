"""The Tornado shell around the pure core: HTTP handlers, peer fan-out, timers, faults.

``host`` runs a core ``Node`` (the Ready contract, group commit), ``transport`` talks to peers,
``propose`` serves ``/propose`` straight off the HTTP connection (the hot path), ``handlers``
maps every other endpoint to core inputs, ``answers`` says what clients are told, ``faults``
injects delays, ``server`` wires one node up.
"""
