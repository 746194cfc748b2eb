"""Integrations with other libraries' objects and trainers (imported where they are used).

- :mod:`dictopt.integrations.saelens`: train with SAELens's own trainer (solvers
  ``saelens-standard`` and ``saelens-topk``, registered when the module is imported).
"""
