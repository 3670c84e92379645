"""Planning, dispatch, run status, the local (embedded) executor and the ``accel`` CLI."""
