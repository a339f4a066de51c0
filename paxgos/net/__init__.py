"""The Tornado shell around the pure core: HTTP handlers, peer fan-out, timers, faults.

``host`` runs a core ``Node`` (the Ready contract, group commit), ``transport`` talks to peers,
``handlers`` maps HTTP to core inputs, ``faults`` injects delays, ``server`` wires one node up.
"""
