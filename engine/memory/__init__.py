"""Where weights live and how much room a run needs: placement of any ``nn.Module``'s tensors.

* ``estimates``: byte estimates (a DiT forward's activations, a VAE decode, the FFN chunk)
  and the ``gpu_budget`` parser; pure arithmetic on config numbers;
* ``streaming``: the checkpoint file as the host copy (file views) and weight streaming
  under a device budget, block by block, with its copy links;
* ``residency``: the two experts' places over a run (``offload_cpu``, ``release``,
  ``keep_both``) behind ``ModelHandle``.
* ``frames``: a long video's decoded frames on disk instead of in RAM (the frame store's
  segment files, their strict checks, and the MP4 encoded from them one frame at a time).

Nothing here knows the Wan layers: modules are duck-typed (``model.blocks``), so this
package sits below ``engine.model`` and imports only ``engine.errors``. What it must
tell the guidance (two passes instead of a batched forward) it is told as a callback.
"""
