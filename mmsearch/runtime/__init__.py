"""Where a run happens: device, precision and memory layout, as one object (Lightning Fabric's
accelerator + precision, nanoGPT's ``ctx``). Built once per process from ``run.*`` and handed to
the engine, feature extraction, export and serving; nothing else calls ``.to(device)`` or
``autocast`` on its own. GPU discovery for the sweep coordinator needs no torch at all."""

from mmsearch._lazy import lazy_exports

__all__ = ["precision_key", "thread_budget", "out_of_memory_advice", "VISIBLE_ENV", "PRECISIONS", "Runtime", "idle_cpu_threads", "is_cuda_error", "is_out_of_memory", "runtime_for", "visible_gpus"]
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["Runtime", "runtime_for", "is_cuda_error", "is_out_of_memory"], "._runtime"),
    **dict.fromkeys(["PRECISIONS", "VISIBLE_ENV", "idle_cpu_threads", "out_of_memory_advice", "precision_key", "thread_budget",
                     "visible_gpus"], "._devices"),
})
