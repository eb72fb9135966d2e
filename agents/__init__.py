"""The node agent: registers a Node, runs its pods as coroutines, owns their network stacks."""
