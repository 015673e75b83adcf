"""Media worker processes: one per core, each owning its viewers' WebRTC state.

- `admission`: capacity and per-user / per-IP caps, reserved atomically at the WHEP POST;
- `viewers`: the viewer backend interface and its in-process implementation;
- `feed`: the node side of the local relay that feeds each worker once per packet;
- `pool`: the node's supervisor of worker processes and the routing of WHEP requests;
- `worker`: the worker process entry point (`python -m airclass_web.delivery.workers.worker`).
"""
