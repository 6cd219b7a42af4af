"""Video sessions inside a model worker (worker side only: these modules load the model runtime).

``manager`` runs session commands on the model thread, ``live`` holds one session's tracking state,
``frames`` decodes the video on demand, ``encoding`` turns a frame's objects into the API's shape,
``tasks`` is the Celery entry point (task name ``sessions.command``).
"""
