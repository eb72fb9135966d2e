"""What the cluster is doing right now, for the live topology page.

`ring` keeps each process's recent flow events in memory (fed by `podnet.logs`); `flows`,
`links` and `topology` are pure view models the control plane's UI hub builds from the store,
the agents' `/observe` streams and its own ring. Importing this package costs nothing: the
logging hook imports only `ring`.
"""
