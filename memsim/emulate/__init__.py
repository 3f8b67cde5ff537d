"""An emulated cloud tier for tests, benchmarks and notebooks.

`LocalS3` runs a local S3 endpoint (moto) behind `DelayProxy`, a user-space HTTP/1.1 proxy
that adds a one-way delay, caps bandwidth per connection, injects faults (`Faults`: HTTP 503,
connection resets, stalls) and logs every request (`RequestRecord`). The kernel here has no
netem, so this is how reads from "the cloud" get realistic timings on one machine.
"""

from memsim.emulate.proxy import DelayProxy, Faults, RequestRecord
from memsim.emulate.s3 import LocalS3, LocalS3Process

__all__ = ["DelayProxy", "Faults", "LocalS3", "LocalS3Process", "RequestRecord"]
