"""Workers: model hosts (`modelyard worker`) that serve their local models to the gateways' routers.

`agent` runs on the host (register, beat, sign off); `registry` runs in every gateway (the live set, from the
database, becomes router deployments); `backend` is how a router calls a worker; `repo` is the workers table.
The HTTP side is `server/routes/workers.py`.
"""
