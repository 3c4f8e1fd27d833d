"""A toy method for the method contract test (tests/test_method_contract.py): defined here,
outside the package, and registered only through the registry
(:func:`hvc.config.registry.register_method`). Two phases (still images, then clips), its
own parameter section, propagation preset, inference and published row."""
