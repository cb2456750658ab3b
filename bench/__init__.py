"""Benchmarks (``python -m bench.export_bench``).

``python -m bench.<name>`` imports this package before the module, so the patch below comes first, as in the
services: nameko clients, and anything importing ssl, need it (docs/architecture.md fact 7).
"""

import eventlet

eventlet.monkey_patch()
