"""Past one device: one video split over several processes (``torch.distributed``).

* ``sequence``: Ulysses sequence parallel, a ``WanModel`` wrapper whose forward splits
  the tokens over the ranks (all-to-all over heads in self-attention);
* ``cfg``: CFG parallel, the two guidance passes on two ranks;
* ``workers``: the spawned worker processes, one per device, that ComfyUI keeps across
  jobs, and the job that runs the one sampling loop on every rank.

Above ``sampling`` (a worker runs ``engine.sampling.loop.sample``); below ``testing``.
"""
