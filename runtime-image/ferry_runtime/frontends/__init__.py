"""Front-end processes: the REST and gRPC transports in processes of their own, feeding the one
compute process that owns the model and the batcher.

In one process every request's Python work (HTTP or gRPC, decoding, validation, encoding)
shares the GIL with the batcher, so a pod with more CPUs serves little more. With
``FERRY_RUNTIME_FRONTEND_PROCESSES=N`` the runtime process becomes the *compute process*: it
loads the model, runs the batcher and starts N front-end processes (``python -m
ferry_runtime.frontends``). Each front end serves both protocols on the same ports
(``SO_REUSEPORT``: the kernel spreads connections), runs the whole DataPlane (validation,
metadata, responses) and hands each validated request's arrays to the compute process over a
private socket pair (``channel.py``); the compute process queues them in the batcher and sends
the output slices back (``service.py``). Per request, the compute core spends only unpickling,
queueing and answering: the transports run on the other cores.

Statistics and metrics stay whole: the compute process records every request and batch and
answers ``ModelStatistics`` for all front ends; ``/metrics`` on any front end sums every
process's series (``exposition.py``). A front end that dies ends the compute process (the
container restarts); a compute process that dies ends its front ends.
"""
