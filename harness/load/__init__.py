"""Load: Locust in its own process (locustfile.py is the only module that imports locust)."""
