"""Helpers shared by the test packages: small data (``tiny``, ``bundles``), reference
implementations written from the papers (``joint_reference``, ``graph_reference``)
fault injection (``faults``) and the sharding checks (``shards``). Import them as ``tests.helpers.<module>``
(relative: ``from ..helpers.bundles import random_bundle``); fixtures live in the
``conftest.py`` files."""
