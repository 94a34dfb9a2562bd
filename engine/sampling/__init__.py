"""The one sampling loop and what it is made of.

* ``loop``: ``sample``, the only loop (both experts, the switch rule, residency, callbacks);
  every new model source, cache or plan is an option, a callable or a model handle of it;
* ``schedule``: sigma schedules and the switch step; ``solvers``: UniPC, Euler, ...;
* ``guidance``: classifier-free guidance's passes (batched when it can);
* ``fast``: speed options (attention kernel, compiled blocks, fp8 matmul).

The top of the product engine: it may import every package below (model, weights, memory).
"""
