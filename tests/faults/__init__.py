"""Scale-out and fault tests: several gateways and replicas, kills and restarts, measured from the
clients' side (issue 3). Each test builds its own isolated topology; see tests/faults/conftest.py."""
