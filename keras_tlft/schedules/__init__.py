"""Schedules: what trains when, at which learning rates, as plain data (no Keras).

- ``schedule``: :class:`~keras_tlft.Schedule`, its JSON form and files; ``stage`` one stage.
- ``schedule_input``: :func:`~keras_tlft.parse_schedule`, every form users write.
- ``presets``: ``two_phase``, ``gradual``, ``plateau``, ``lp_ft``, ``ulmfit``, ``layer_decay``...
- ``plan``: what each stage means on a backbone (``plan_stages``, ``inspect --schedule``).
- ``lr_rules``: the learning rate each group of variables trains at.
"""
